"""CuPy compiles the device reducer's kernels into ~/.cupy/kernel_cache unless told otherwise; while it compiles, its
cache points under the runs root (or stays in memory), and a CUPY_CACHE_DIR the user chose is left alone."""

from __future__ import annotations

import os

from engine.compare.reducers import kernel_cache_env


def test_compiling_points_cupy_at_the_runs_root_or_memory_and_restores_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("CUPY_CACHE_DIR", raising=False)
    monkeypatch.delenv("CUPY_CACHE_IN_MEMORY", raising=False)
    with kernel_cache_env(tmp_path / "device-kernels"):
        assert os.environ["CUPY_CACHE_DIR"] == str(tmp_path / "device-kernels")
        assert "CUPY_CACHE_IN_MEMORY" not in os.environ
    assert "CUPY_CACHE_DIR" not in os.environ
    with kernel_cache_env(None):
        assert os.environ["CUPY_CACHE_IN_MEMORY"] == "1" and "CUPY_CACHE_DIR" not in os.environ
    assert "CUPY_CACHE_IN_MEMORY" not in os.environ


def test_a_cache_folder_the_user_chose_stays(tmp_path, monkeypatch):
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("CUPY_CACHE_IN_MEMORY", "0")
    for folder in (tmp_path / "device-kernels", None):
        with kernel_cache_env(folder):
            assert os.environ["CUPY_CACHE_DIR"] == str(tmp_path / "mine") and os.environ["CUPY_CACHE_IN_MEMORY"] == "0"
    assert os.environ["CUPY_CACHE_DIR"] == str(tmp_path / "mine")
