"""Writing an entry of a cache shared by processes (the runs root's pre-processing and calibration caches): atomically,
under a name of its own per process and thread, and never fatally, since an entry not written only costs time later."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, write: Callable[[Path], object], what: str) -> bool:
    """write(temporary path), then the file replaces `path` at once. Whether it was written; where not, a warning
    names `what`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
        return True
    except OSError as err:
        with contextlib.suppress(OSError):  # the folder itself may be what failed
            tmp.unlink(missing_ok=True)
        logging.getLogger(__name__).warning("%s not written: %s", what, err)
        return False
