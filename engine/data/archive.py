"""Safe listing and reading of zip uploads: no path escapes, bounded members, size and ratio."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from engine.errors import DataError

__all__ = ["ZipLimits", "safe_zip_members", "read_member"]


@dataclass(frozen=True)
class ZipLimits:
    max_members: int = 20_000
    max_total_bytes: int = 2 * 1024**3
    max_member_bytes: int = 256 * 1024**2
    max_ratio: float = 200.0


def safe_zip_members(path: Path, suffixes: tuple[str, ...], limits: ZipLimits = ZipLimits()) -> list[str]:
    """Names of the members to read, sorted; refuses the whole archive on any unsafe member."""
    what = f"'{path.name}'"
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise DataError(f"{what} is not a readable zip archive; zip the image folder again.") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise DataError(f"{what} has {len(infos)} members, over the limit of {limits.max_members}; use fewer images.")
        total = 0
        names = []
        for info in infos:
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
                raise DataError(f"{what} contains the member '{name}', whose path leaves the archive; QuantScope refuses such archives, zip the folder again with relative names.")
            if info.is_dir():
                continue
            if info.file_size > limits.max_member_bytes:
                raise DataError(f"Member '{name}' of {what} unpacks to {info.file_size} bytes, over the {limits.max_member_bytes}-byte limit per file.")
            total += info.file_size
            if total > limits.max_total_bytes:
                raise DataError(f"{what} unpacks to more than {limits.max_total_bytes} bytes, over the limit; use fewer or smaller images.")
            if info.compress_size and info.file_size / info.compress_size > limits.max_ratio and info.file_size > 1024**2:
                raise DataError(f"Member '{name}' of {what} expands {info.file_size / info.compress_size:.0f}x, which looks like a zip bomb; QuantScope refuses it.")
            if name.lower().endswith(suffixes) and not any(p.startswith(("__MACOSX", ".")) for p in parts):
                names.append(name)
    return sorted(names)


def read_member(path: Path, name: str, limits: ZipLimits = ZipLimits()) -> bytes:
    with zipfile.ZipFile(path) as zf, zf.open(name) as fh:
        data = fh.read(limits.max_member_bytes + 1)
    if len(data) > limits.max_member_bytes:
        raise DataError(f"Member '{name}' of '{path.name}' is larger than it claims; QuantScope refuses it.")
    return data
