"""One error hierarchy. Every message is a sentence a user can act on: what is wrong and what to do."""

from __future__ import annotations

import errno

__all__ = [
    "QuantScopeError",
    "ModelError",
    "DataError",
    "ConfigError",
    "BackendError",
    "RunFolderError",
    "Cancelled",
    "unexpected_error_sentence",
]


class QuantScopeError(Exception):
    """Base class. `str(err)` is shown to the user as is (CLI stderr, st.error). `option` names the setting the error
    concerns (e.g. "fallback", "calib_method"), so the CLI can name its flag and the dashboard its control."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class ModelError(QuantScopeError):
    """The ONNX model cannot be read, validated or run."""


class DataError(QuantScopeError):
    """Calibration/evaluation data or labels do not fit the model."""


class ConfigError(QuantScopeError):
    """An option is invalid (unknown calibration method, fallback node not in the graph, ...)."""


class BackendError(QuantScopeError):
    """A requested backend (CUDA, TensorRT) is unavailable or failed."""


class RunFolderError(QuantScopeError):
    """A run folder is missing, incomplete or not a QuantScope run."""


class Cancelled(QuantScopeError):
    """The user cancelled a job; raised from a progress callback, it stops the engine where it is."""

    def __init__(self, message: str = "Cancelled; the earlier results are untouched.") -> None:
        super().__init__(message)


def unexpected_error_sentence(err: BaseException) -> str:
    """For a failure no check anticipated: still one sentence, with the cause's last line and what to do."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ("The disk holding the run folders is full; free space (delete old runs on the History page, or their "
                "folders under QUANTSCOPE_RUNS_ROOT) or point QUANTSCOPE_RUNS_ROOT at a larger disk, then run again "
                "(earlier results are untouched).")
    lines = str(err).strip().splitlines()
    cause = f"{type(err).__name__}: {lines[-1][:240]}" if lines else type(err).__name__
    return (f"QuantScope failed unexpectedly ({cause}); earlier results are untouched, and a bug report "
            "with the model and `quantscope doctor` output would help.")
