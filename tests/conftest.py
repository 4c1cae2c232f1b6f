from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"


def pytest_configure(config):
    # Dozens of comparisons of the sample: keep their batch caches small (inputs only past 64 MB) so the suite fits
    # a small disk; subprocesses (CLI, Streamlit servers) inherit it. test_reference_cache sets budgets explicitly.
    os.environ.setdefault("QUANTSCOPE_CACHE_MB", "64")


@pytest.fixture(autouse=True)
def _private_runs_root(tmp_path, monkeypatch):
    """Every test gets its own run index and dashboard runs root, never the user's ~/.quantscope."""
    monkeypatch.setenv("QUANTSCOPE_RUNS_ROOT", str(tmp_path / "runs"))


@pytest.fixture(scope="session")
def catalog() -> dict:
    return json.loads((SAMPLES / "catalog.json").read_text())


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def eval_data() -> tuple[np.ndarray, np.ndarray]:
    return np.load(SAMPLES / "digits_eval.npz")["input"], np.load(SAMPLES / "digits_eval_labels.npy")
