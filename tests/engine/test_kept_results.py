"""A run folder keeps its last sensitivity and fallback search; reopened, the run shows them again while they were
measured on what the run still is, and not once it was compared again (a browser trial's 7.5-minute search could not be
found again)."""

from __future__ import annotations

import pandas as pd

from engine import autofallback, compare, kept_search, kept_sensitivity, rebuild, sensitivity
from tests.engine.conftest import SAMPLES

KW = {"batch_size": 50, "provider": "cpu", "screen_samples": 0}


def test_a_sensitivity_and_a_search_are_read_back_until_the_run_is_compared_again(tmp_path):
    run = tmp_path / "run"
    compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=run, **KW)
    assert kept_sensitivity(run) is None and kept_search(run) is None  # nothing measured yet
    frame = sensitivity(run, samples=20)
    found = autofallback(run, "snr_db=30", samples=20, apply=False)
    again = kept_sensitivity(run)
    # columns of None (no labels: no accuracy) come back as NaN
    pd.testing.assert_frame_equal(again, frame.astype(
        {c: float for c in frame.columns if frame[c].isna().all()}), check_dtype=False)
    assert again.attrs["samples"] == frame.attrs["samples"] == 20
    back = kept_search(run)
    assert back.to_dict() == found.to_dict()  # every field, the steps and each strategy's result included (as written)
    rebuild(run, fallback=list(found.fallback))  # a rebuild changes the fallback set, not what the probes measure
    assert kept_search(run).to_dict() == found.to_dict() and kept_sensitivity(run) is not None
    compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=run,
            data=SAMPLES / "digits_eval.npz", **KW)  # other samples in the same folder: those results are not of this run
    assert kept_sensitivity(run) is None and kept_search(run) is None
