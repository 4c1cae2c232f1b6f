"""What the next comparison runs on: a typed, frozen value (never a dict of magic keys)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import engine

__all__ = ["Inputs", "ROLES"]

ROLES = ("model", "calib", "data", "labels")  # file roles, as the CLI names them (model is positional)


@dataclass(frozen=True)
class Inputs:
    name: str  # what the user knows the model by: the sample's name or the uploaded file's name
    model: str  # paths on the server
    calib: str
    data: str | None = None
    labels: str | None = None
    images: engine.ImagePreprocess | None = None  # how .zip image folders become arrays (None: array data)
    sample: bool = False
    uploaded_as: tuple[tuple[str, str], ...] = ()  # (role, the user's own file name) of each uploaded file

    def path(self, role: str) -> str | None:
        return getattr(self, role)

    def user_name(self, role: str) -> str | None:
        """The name the user knows a file by: their own file name for uploads, the checkout path for samples."""
        path = self.path(role)
        if path is None:
            return None
        if self.sample:
            return f"sample_models/{Path(path).name}"
        return dict(self.uploaded_as).get(role, Path(path).name)

    def present(self) -> bool:
        """Whether every file is still on the server (a new upload set discards the earlier ones)."""
        return all(Path(p).is_file() for r in ROLES if (p := self.path(r)) is not None)

    def content_key(self) -> tuple[tuple[str, str], ...]:
        """(role, sha256 of the file's bytes) for every file, and how image folders become arrays: the same key means the
        same inputs, wherever they were uploaded to (a sweep reopened after its files were uploaded again)."""
        out = []
        for role in ROLES:
            if (path := self.path(role)) is not None:
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
                out.append((role, digest.hexdigest()))
        images = dataclasses.asdict(self.images) if self.images is not None else None
        out.append(("images", json.dumps(images, sort_keys=True, default=str)))
        return tuple(out)

    @property
    def uses_images(self) -> bool:
        return any(p is not None and Path(p).suffix.lower() == ".zip" for p in (self.calib, self.data))

    def to_record(self) -> dict:
        """JSON for inputs.json: file names only (paths are rebuilt inside the workspace's uploads/)."""
        return {"name": self.name, "sample": self.sample, "set": Path(self.model).parent.name,
                "files": {r: Path(p).name for r in ROLES if (p := self.path(r))},
                "uploaded_as": dict(self.uploaded_as),
                "images": dataclasses.asdict(self.images) if self.images is not None else None}

    @classmethod
    def from_record(cls, record: dict, uploads: Path) -> Inputs | None:
        """The uploads a record names, if they are all still in `uploads` (a folder of this workspace)."""
        files = {role: uploads / Path(name).name for role, name in record["files"].items() if role in ROLES}
        if "model" not in files or "calib" not in files or not all(p.is_file() for p in files.values()):
            return None
        images = record.get("images")
        if images is not None:
            images = engine.ImagePreprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in images.items()})
        return cls(name=str(record["name"]), model=str(files["model"]), calib=str(files["calib"]),
                   data=str(files["data"]) if "data" in files else None,
                   labels=str(files["labels"]) if "labels" in files else None, images=images, sample=False,
                   uploaded_as=tuple((str(k), str(v)) for k, v in (record.get("uploaded_as") or {}).items()))
