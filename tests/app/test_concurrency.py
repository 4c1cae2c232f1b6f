"""8 browser sessions run a comparison at the same time through the shared worker queue: every one finishes,
its result equals a solo run's, and nothing of one session appears in another."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

import engine
from app import state
from engine.run_index import RunIndex, RunStatus
from tests.app.test_pages import APP, CATALOG

SESSIONS = 8


def test_eight_sessions_at_once_are_correct_and_isolated(runs_root):
    solo = engine.compare(*(Path(APP).parents[1] / "sample_models" / f for f in ("resnet_digits_outlier.onnx", "digits_calib.npz")),
                          data=Path(APP).parents[1] / "sample_models" / "digits_eval.npz",
                          labels=Path(APP).parents[1] / "sample_models" / "digits_eval_labels.npy",
                          out_dir=runs_root / "solo", batch_size=25, provider="cpu")
    apps = []
    for _ in range(SESSIONS):
        at = AppTest.from_file(APP, default_timeout=120)
        at.run()
        at.switch_page("views/compare.py").run()
        at.selectbox(key="cmp_provider").set_value("cpu").run()
        next(b for b in at.button if b.label == "Run comparison").click().run()  # queues and returns at once
        apps.append(at)
    jobs = [at.session_state[state.JOB] for at in apps]
    assert len({j.id for j in jobs}) == SESSIONS
    deadline = time.time() + 600
    while any(j.active for j in jobs):
        assert time.time() < deadline, "the queue did not drain"
        time.sleep(0.5)
    assert all(j.state == "done" for j in jobs), [j.error for j in jobs]

    sessions, run_dirs = set(), set()
    planted = CATALOG["models"]["resnet_digits_outlier"]["outlier"]["consumer_nodes"][0]
    for at in apps:
        at.run()  # applies the job's result in that session
        result = at.session_state[state.RESULT]
        ws = at.session_state[state.WORKSPACE]
        sessions.add(ws)
        run_dirs.add(result.run_dir)
        assert result.run_dir.parent.name == ws and result.run_dir.is_relative_to(runs_root)  # its own folder
        (record,) = RunIndex(runs_root).runs(ws)  # only its own run, finished, pointing at its folder
        assert record.status is RunStatus.DONE and record.run_dir == result.run_dir
        assert result.summary.culprits[0].node == planted
        np.testing.assert_allclose(result.layers["snr_db"], solo.layers["snr_db"], rtol=1e-9)
        np.testing.assert_allclose(result.layers["cosine"], solo.layers["cosine"], rtol=1e-12)
        assert result.final_output().snr_db == solo.final_output().snr_db
    assert len(sessions) == SESSIONS and len(run_dirs) == SESSIONS
