"""One entry point that reads any supported data format for a given model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.data.arrays import _np_load, load_npy, load_npz, load_polygraphy_json
from engine.data.images import ImagePreprocess, ImageSource
from engine.data.source import BatchSource
from engine.data.validation import check_batch_axes, check_source
from engine.errors import DataError
from engine.model.info import ModelInfo

__all__ = ["load_data", "load_labels", "DATA_FORMATS"]

DATA_FORMATS = (".npz", ".npy", ".json", ".zip", "folder of images")


def load_data(
    path: str | os.PathLike,
    info: ModelInfo,
    *,
    images: ImagePreprocess | None = None,
    what: str | None = None,
) -> BatchSource:
    """Reads `path` (npz, npy, Polygraphy JSON, zip or folder of images) and checks it against the model."""
    p = Path(path)
    label = what or f"'{p.name}'"
    if not p.exists():
        raise DataError(f"The data path {p} does not exist; check the path.")
    check_batch_axes(info)  # the model's reason first: a data file's scalar would send the user to reshape data in vain
    suffix = p.suffix.lower()
    if p.is_dir() or suffix == ".zip":
        image_inputs = [t for t in info.inputs]
        if len(image_inputs) != 1:
            raise DataError(f"Image data fits single-input models only, and this model has {len(image_inputs)} inputs; use an .npz with one array per input.")
        source: BatchSource = ImageSource(p, image_inputs[0], images or ImagePreprocess())
    elif suffix == ".npz":
        source = load_npz(p, label)
    elif suffix == ".npy":
        if len(info.inputs) != 1:
            raise DataError(
                f"{label} is a single .npy array but the model has {len(info.inputs)} inputs "
                f"({', '.join(repr(t.name) for t in info.inputs)}); use an .npz with one array per input."
            )
        source = load_npy(p, info.inputs[0].name, label)
    elif suffix == ".json":
        source = load_polygraphy_json(p, label)
    else:
        raise DataError(f"{label} has an unsupported format; use one of: {', '.join(DATA_FORMATS)}.")
    check_source(source, info, label)
    return source


def load_labels(path: str | os.PathLike, num_samples: int, what: str | None = None) -> np.ndarray:
    """what: how the sentences name the file (the dashboard passes the user's name; its copy is labels.npy)."""
    p = Path(path)
    what = what or f"'{p.name}'"
    if not p.is_file():
        raise DataError(f"The labels file {p} does not exist; check the path.")
    arr = _np_load(p, what)
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{what} is an archive, not a single array of labels; save the labels with np.save.")
    if arr.dtype.kind not in "iu":
        raise DataError(f"{what} has dtype {arr.dtype}; labels must be integer class indices (save them as int64).")
    arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1:
        raise DataError(f"{what} has shape {list(arr.shape)}; labels must be a 1-D array with one class index per sample.")
    if len(arr) != num_samples:
        raise DataError(f"{what} has {len(arr)} labels but the data has {num_samples} samples; give exactly one label per sample.")
    return arr.astype(np.int64)
