"""Checks a batch source against the model's inputs; every mismatch is one sentence naming the input."""

from __future__ import annotations

import numpy as np

from engine.data.source import ArraySource, BatchSource
from engine.errors import DataError
from engine.model.info import ModelInfo

__all__ = ["check_source", "check_finite", "check_batch_axes"]


def check_batch_axes(info: ModelInfo) -> None:
    """Every input must take its samples on axis 0: a scalar input or a batch axis further in (silero-vad's state is
    [2, batch, 128], its sample rate a scalar) cannot be batched, whatever the data file holds."""
    batch = next((t.shape[0] for t in info.inputs if t.shape and isinstance(t.shape[0], str)), None)
    for spec in info.inputs:
        if spec.shape is not None and not spec.shape:
            raise DataError(f"Model input '{spec.name}' is a scalar, so it cannot take one value per sample: QuantScope batches "
                            f"every input on axis 0; export the model with '{spec.name}' as a constant or with a batch axis first.")
        # a fixed 1 first ([1, batch, H], a PyTorch RNN's h0) fixes the batch at 1, where samples go one a batch as they are
        if spec.shape and batch is not None and spec.shape[0] not in (batch, 1) and batch in spec.shape[1:]:
            raise DataError(f"Model input '{spec.name}' has its batch axis '{batch}' at position {spec.shape.index(batch)} "
                            f"{spec.shape_text()}, but QuantScope batches every input on axis 0; export the model with the "
                            "batch axis first.")


def check_source(source: BatchSource, info: ModelInfo, what: str = "the data") -> None:
    """The source against the model's inputs; callers check the model's own batch axes first (check_batch_axes)."""
    expected = {t.name: t for t in info.inputs}
    given = set(source.input_names)
    missing = [n for n in expected if n not in given]
    extra = sorted(given - set(expected))
    if missing:
        raise DataError(
            f"{_cap(what)} has no array for model input '{missing[0]}'"
            + (f" (it has {', '.join(repr(n) for n in sorted(given))})" if given else "")
            + "; name each array after a model input: " + ", ".join(repr(n) for n in expected) + "."
        )
    if extra:
        raise DataError(
            f"{_cap(what)} has array(s) {', '.join(repr(n) for n in extra)} that are not model inputs; "
            "the model's inputs are " + ", ".join(repr(n) for n in expected) + "; remove or rename the extra arrays."
        )
    for name, (shape, dtype) in source.sample_spec().items():
        spec = expected[name]
        if dtype != spec.dtype:
            raise DataError(
                f"Input '{name}' in {what} has dtype {dtype} but the model expects {spec.dtype}; "
                f"convert it (e.g. array.astype(np.{spec.dtype}))."
            )
        if spec.shape is None:
            continue
        if len(shape) + 1 != len(spec.shape):
            raise DataError(
                f"Input '{name}' in {what} has samples of shape {list(shape)} (rank {len(shape) + 1} with the sample axis) "
                f"but the model expects rank {len(spec.shape)} {spec.shape_text()}; axis 0 must be the sample axis."
            )
        for axis, (got, want) in enumerate(zip(shape, spec.shape[1:]), start=1):
            if isinstance(want, int) and want != got:
                raise DataError(
                    f"Input '{name}' in {what} has size {got} on axis {axis} but the model expects {want} "
                    f"(model shape {spec.shape_text()}, data sample shape {list(shape)})."
                )
    if isinstance(source, ArraySource):
        for name, arr in source.arrays.items():
            check_finite(arr, name, what)


def check_finite(arr: np.ndarray, name: str, what: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int(arr.size - np.isfinite(arr).sum())
        raise DataError(f"Input '{name}' in {what} contains {bad} NaN or Inf value(s); clean the data before calibrating.")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]
