"""The bundled sample models (sample_models/catalog.json): what the Load page offers with nothing to upload.

Its own module so that workspace.py (restoring a reopened workspace's inputs) and the pages can both use it without
importing each other."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from app.inputs import Inputs

__all__ = ["SAMPLES", "catalog", "default_name", "sample_inputs"]

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


@cache
def catalog() -> dict:
    return json.loads((SAMPLES / "catalog.json").read_text())


def default_name() -> str:
    return catalog()["default"]


def sample_inputs(name: str) -> Inputs:
    entry = catalog()["models"][name]
    return Inputs(name=name, model=str(SAMPLES / entry["file"]), calib=str(SAMPLES / entry["calibration"]),
                  data=str(SAMPLES / entry["evaluation"]), labels=str(SAMPLES / entry["labels"]), sample=True)
