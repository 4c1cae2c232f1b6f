"""CuPy keeps the kernels it compiles (the device reducer's, and its own) in ~/.cupy/kernel_cache unless told otherwise:
the first device reducer of a process points its cache under the runs root, or keeps it in memory, and a choice the
user made is left alone."""

from __future__ import annotations

import os

import pytest

from engine.compare import reducers
from engine.compare.reducers import contain_kernel_cache


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """As in a new process: neither variable set, nothing contained yet; both are put back after the test (setenv
    first, so that monkeypatch records them even where they were not set)."""
    for name in ("CUPY_CACHE_DIR", "CUPY_CACHE_IN_MEMORY"):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    monkeypatch.setattr(reducers, "_CONTAINED", [])


def test_the_kernel_cache_goes_under_the_runs_root(tmp_path):
    contain_kernel_cache(tmp_path / "device-kernels")
    assert os.environ["CUPY_CACHE_DIR"] == str(tmp_path / "device-kernels") and (tmp_path / "device-kernels").is_dir()
    contain_kernel_cache(tmp_path / "other")  # CuPy reads it once a process: later reducers keep it
    contain_kernel_cache(None)
    assert os.environ["CUPY_CACHE_DIR"] == str(tmp_path / "device-kernels") and "CUPY_CACHE_IN_MEMORY" not in os.environ
    assert not (tmp_path / "other").exists()


def test_without_a_runs_root_the_kernels_stay_in_memory(tmp_path):
    """No folder at all: a temporary one removed at exit stayed behind in Ray's actors, killed without exit handlers."""
    contain_kernel_cache(None)
    assert os.environ["CUPY_CACHE_IN_MEMORY"] == "1" and "CUPY_CACHE_DIR" not in os.environ
    contain_kernel_cache(tmp_path / "device-kernels")  # the process's first choice stays
    assert "CUPY_CACHE_DIR" not in os.environ and not (tmp_path / "device-kernels").exists()


def test_a_choice_the_user_made_stays(tmp_path, monkeypatch):
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path / "mine"))
    contain_kernel_cache(tmp_path / "device-kernels")
    contain_kernel_cache(None)
    assert os.environ["CUPY_CACHE_DIR"] == str(tmp_path / "mine") and "CUPY_CACHE_IN_MEMORY" not in os.environ
    assert not (tmp_path / "mine").exists() and not (tmp_path / "device-kernels").exists()
    monkeypatch.delenv("CUPY_CACHE_DIR")
    monkeypatch.setenv("CUPY_CACHE_IN_MEMORY", "1")
    contain_kernel_cache(tmp_path / "device-kernels")
    assert "CUPY_CACHE_DIR" not in os.environ and not (tmp_path / "device-kernels").exists()


def test_the_first_folder_stays_and_is_made_again_where_deleted_since(tmp_path):
    """CuPy reads CUPY_CACHE_DIR once a process: the GPU tests' later kernels went to an earlier test's runs root, deleted
    since (FileNotFoundError). The folder stays the process's and the next reducer makes it again."""
    contain_kernel_cache(tmp_path / "a")
    assert (tmp_path / "a").is_dir()
    (tmp_path / "a").rmdir()
    contain_kernel_cache(tmp_path / "b")
    assert os.environ["CUPY_CACHE_DIR"] == str(tmp_path / "a") and (tmp_path / "a").is_dir()
    assert not (tmp_path / "b").exists()

