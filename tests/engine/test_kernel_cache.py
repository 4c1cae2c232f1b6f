"""CuPy keeps the kernels it compiles (the device reducer's, and its own) in ~/.cupy/kernel_cache unless told otherwise:
the first device reducer of a process points its cache under the runs root, or at a private temporary folder, and a
CUPY_CACHE_DIR already set is left alone."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from engine.compare.reducers import contain_kernel_cache


def test_the_kernel_cache_goes_under_the_runs_root(tmp_path, monkeypatch):
    monkeypatch.delenv("CUPY_CACHE_DIR", raising=False)
    contain_kernel_cache(tmp_path / "device-kernels")
    assert os.environ["CUPY_CACHE_DIR"] == str(tmp_path / "device-kernels")
    (tmp_path / "device-kernels").mkdir()  # CuPy creates it on its first compile
    contain_kernel_cache(tmp_path / "other")  # kept for the process while it exists: later reducers keep it
    assert os.environ["CUPY_CACHE_DIR"] == str(tmp_path / "device-kernels")


def test_without_a_runs_root_it_is_a_private_temporary_folder(monkeypatch):
    monkeypatch.delenv("CUPY_CACHE_DIR", raising=False)
    contain_kernel_cache(None)
    folder = Path(os.environ["CUPY_CACHE_DIR"])
    assert folder.is_dir() and folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith("quantscope-kernels-")
    assert folder.stat().st_mode & 0o077 == 0  # mkdtemp: only this user reads or writes it
    folder.rmdir()


def test_a_cache_folder_the_user_chose_stays(tmp_path, monkeypatch):
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path / "mine"))
    contain_kernel_cache(tmp_path / "device-kernels")
    contain_kernel_cache(None)
    assert os.environ["CUPY_CACHE_DIR"] == str(tmp_path / "mine")


def test_a_runs_root_deleted_since_is_replaced_by_the_next_one(tmp_path, monkeypatch):
    """The GPU tests' runs roots are temporary folders: a later test's kernels went to a deleted one (FileNotFoundError)."""
    monkeypatch.delenv("CUPY_CACHE_DIR", raising=False)
    contain_kernel_cache(tmp_path / "a")
    (tmp_path / "a").mkdir()
    contain_kernel_cache(tmp_path / "b")  # ours, and still there: kept
    assert os.environ["CUPY_CACHE_DIR"] == str(tmp_path / "a")
    (tmp_path / "a").rmdir()
    contain_kernel_cache(tmp_path / "b")  # ours, but gone: the new runs root
    assert os.environ["CUPY_CACHE_DIR"] == str(tmp_path / "b")
