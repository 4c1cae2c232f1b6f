from __future__ import annotations

import pytest

import engine
from app.samples import sample_inputs


@pytest.fixture(autouse=True)
def runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTSCOPE_RUNS_ROOT", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture(scope="module")
def mobile(tmp_path_factory):
    """One comparison of the bundled mobile_digits sample (its pre-processing folds, expands and renames nodes)."""
    inputs = sample_inputs("mobile_digits")
    run = tmp_path_factory.mktemp("mobile") / "run"
    settings = engine.Settings.from_env({"QUANTSCOPE_RUNS_ROOT": str(run.parent / "root")})
    return inputs, engine.compare(inputs.model, inputs.calib, data=inputs.data, labels=inputs.labels, out_dir=run, batch_size=50,
                                  provider="cpu", settings=settings)
