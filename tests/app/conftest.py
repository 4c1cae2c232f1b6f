from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTSCOPE_RUNS_ROOT", str(tmp_path / "runs"))
    return tmp_path / "runs"
