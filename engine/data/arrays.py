"""NumPy files (.npz / .npy) and Polygraphy's saved-inputs JSON. Never unpickles anything."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np

from engine.data.source import ArraySource
from engine.errors import DataError

__all__ = ["load_npz", "load_npy", "load_polygraphy_json"]


def _np_load(fp, what: str):
    try:
        return np.load(fp, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise DataError(
                f"{what} contains pickled Python objects, which QuantScope never loads because unpickling can run code; "
                "save plain numeric arrays (np.save / np.savez with numeric dtypes)."
            ) from None
        raise DataError(f"{what} is not a readable NumPy file ({err}); save it again with np.save or np.savez.") from None
    except Exception as err:  # noqa: BLE001 - numpy's header parser raises many types (EOFError, TokenError, ...)
        raise DataError(f"{what} is not a readable NumPy file ({type(err).__name__}); save it again with np.save or np.savez.") from None


def _numeric(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{what} has dtype {arr.dtype}, which is not numeric; save numeric arrays only.")
    if arr.ndim == 0:
        raise DataError(f"{what} is a scalar; it needs a sample axis (axis 0) followed by the input's shape.")
    return arr


def load_npz(path: Path, label: str = "") -> ArraySource:
    what = label or f"'{path.name}'"
    npz = _np_load(path, what)
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{what} is a single array (.npy content), not an .npz archive; rename it to .npy or save with np.savez.")
    with npz:
        arrays = {}
        for key in npz.files:
            try:
                arr = npz[key]
            except ValueError as err:
                if "pickle" in str(err).lower():
                    raise DataError(
                        f"Array '{key}' in {what} is pickled, which QuantScope never loads because unpickling can run code; "
                        "save plain numeric arrays with np.savez."
                    ) from None
                raise DataError(f"Array '{key}' in {what} is unreadable ({type(err).__name__}); save the file again with np.savez.") from None
            except Exception as err:  # noqa: BLE001 - a corrupt member fails in zipfile, zlib or numpy's header parser
                raise DataError(f"Array '{key}' in {what} is unreadable ({type(err).__name__}); save the file again with np.savez.") from None
            arrays[key] = _numeric(arr, f"Array '{key}' in {what}")
    return ArraySource(arrays, description=what)


def load_npy(path: Path, input_name: str, label: str = "") -> ArraySource:
    what = label or f"'{path.name}'"
    arr = _np_load(path, what)
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{what} is an .npz archive, not a single array; rename it to .npz.")
    return ArraySource({input_name: _numeric(arr, what)}, description=what)


def load_polygraphy_json(path: Path, label: str = "") -> ArraySource:
    """Reads what `polygraphy run --save-inputs` writes: a list of feed dicts of base64 np.save payloads."""
    what = label or f"'{path.name}'"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{what} is not valid JSON ({err.__class__.__name__}); pass the file written by `polygraphy run --save-inputs`.") from None
    if isinstance(doc, dict) and not _is_array(doc):
        doc = [doc]
    if not isinstance(doc, list) or not doc or not all(isinstance(d, dict) for d in doc):
        raise DataError(f"{what} is not a Polygraphy inputs file (expected a list of feed dicts); pass the file written by `polygraphy run --save-inputs`.")
    parts: dict[str, list[np.ndarray]] = {}
    for i, feed in enumerate(doc):
        if set(feed) != set(doc[0]):
            raise DataError(f"Iteration {i} of {what} has inputs {sorted(feed)} but iteration 0 has {sorted(doc[0])}; every iteration needs the same inputs.")
        for name, value in feed.items():
            if not _is_array(value):
                raise DataError(f"Input '{name}' in iteration {i} of {what} is not an encoded array; pass the file written by `polygraphy run --save-inputs`.")
            try:
                raw = base64.b64decode(value["array"].encode(), validate=True)
            except (ValueError, TypeError):
                raise DataError(f"Input '{name}' in iteration {i} of {what} has a corrupt base64 payload; save the inputs again.") from None
            arr = _np_load(io.BytesIO(raw), f"Input '{name}' in iteration {i} of {what}")
            if not isinstance(arr, np.ndarray):
                raise DataError(f"Input '{name}' in iteration {i} of {what} is not a single array; save the inputs again.")
            parts.setdefault(name, []).append(_numeric(arr, f"Input '{name}' in iteration {i} of {what}"))
    arrays = {}
    for name, chunks in parts.items():
        tails = {c.shape[1:] for c in chunks}
        if len(tails) > 1 or len({c.dtype for c in chunks}) > 1:
            raise DataError(f"Input '{name}' changes shape or dtype between iterations of {what}; every iteration must match.")
        arrays[name] = np.concatenate(chunks, axis=0)
    return ArraySource(arrays, description=what)


def _is_array(value: object) -> bool:
    return isinstance(value, dict) and value.get("polygraphy_class") == "ndarray" and isinstance(value.get("array"), str)
