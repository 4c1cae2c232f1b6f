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
    assert os.environ["CUPY_CACHE_DIR"] == str(tmp_path / "device-kernels") and (tmp_path / "device-kernels").is_dir()
    contain_kernel_cache(tmp_path / "other")  # CuPy reads it once a process: later reducers keep it
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
    assert not (tmp_path / "mine").exists() and not (tmp_path / "device-kernels").exists()


def test_the_first_folder_stays_and_is_made_again_where_deleted_since(tmp_path, monkeypatch):
    """CuPy reads CUPY_CACHE_DIR once a process: the GPU tests' later kernels went to an earlier test's runs root, deleted
    since (FileNotFoundError). The folder stays the process's and the next reducer makes it again."""
    monkeypatch.delenv("CUPY_CACHE_DIR", raising=False)
    contain_kernel_cache(tmp_path / "a")
    assert (tmp_path / "a").is_dir()
    (tmp_path / "a").rmdir()
    contain_kernel_cache(tmp_path / "b")
    assert os.environ["CUPY_CACHE_DIR"] == str(tmp_path / "a") and (tmp_path / "a").is_dir()
    assert not (tmp_path / "b").exists()
