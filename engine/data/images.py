"""Image folders or zips -> model-ready batches, with an explicit preprocessing spec."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from engine.data.archive import ZipLimits, read_member, safe_zip_members
from engine.data.source import Batch
from engine.errors import DataError
from engine.model.info import TensorSpec

__all__ = ["ImagePreprocess", "ImageSource", "IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs well before Pillow's own 179M-pixel limit
Layout = Literal["NCHW", "NHWC"]
Color = Literal["RGB", "BGR", "GRAY"]


@dataclass(frozen=True)
class ImagePreprocess:
    """Resize the shorter side to the target's larger side, center-crop, then (x*scale - mean)/std per channel.

    Fields left as None are read from the model input's shape (see `resolve`)."""

    height: int | None = None
    width: int | None = None
    layout: Layout | None = None
    color: Color | None = None
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def resolve(self, spec: TensorSpec) -> ImagePreprocess:
        shape = spec.shape
        if shape is None or len(shape) != 4:
            raise DataError(
                f"Input '{spec.name}' has shape {spec.shape_text()}, not an image batch of rank 4; "
                "image folders fit only NCHW or NHWC image inputs, use .npz for this model."
            )
        layout = self.layout or ("NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW")
        c, h, w = (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])
        height = self.height or (h if isinstance(h, int) else None)
        width = self.width or (w if isinstance(w, int) else None)
        if height is None or width is None:
            raise DataError(f"Input '{spec.name}' has dynamic height/width {spec.shape_text()}; set the image height and width in the preprocessing options.")
        color = self.color or ("GRAY" if c == 1 else "RGB")
        channels = 1 if color == "GRAY" else 3
        if isinstance(c, int) and c != channels:
            raise DataError(f"Input '{spec.name}' expects {c} channels but color mode {color} gives {channels}; choose a matching color mode.")
        for field, vals in (("mean", self.mean), ("std", self.std)):
            if len(vals) not in (1, channels):
                raise DataError(f"The {field} has {len(vals)} values; give 1 or {channels} (one per channel).")
        if any(s == 0 for s in self.std):
            raise DataError("The std contains 0; every std value must be non-zero.")
        return ImagePreprocess(height, width, layout, color, self.scale, self.mean, self.std)

    def apply(self, img: Image.Image) -> np.ndarray:
        """One image -> one sample (C,H,W) or (H,W,C), float32."""
        assert self.height and self.width and self.layout and self.color, "call resolve() first"
        img = img.convert("L" if self.color == "GRAY" else "RGB")
        tw, th = self.width, self.height
        if img.size != (tw, th):
            side = max(tw, th)
            ratio = side / min(img.size)
            img = img.resize((max(tw, round(img.width * ratio)), max(th, round(img.height * ratio))), Image.BILINEAR)
            left, top = (img.width - tw) // 2, (img.height - th) // 2
            img = img.crop((left, top, left + tw, top + th))
        arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if self.color == "BGR":
            arr = arr[:, :, ::-1]
        arr = (arr * np.float32(self.scale) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1) if self.layout == "NCHW" else arr)


class ImageSource:
    """Images from a folder or a zip, decoded lazily per batch (re-iterable)."""

    def __init__(self, path: Path, spec: TensorSpec, preprocess: ImagePreprocess, limits: ZipLimits = ZipLimits()) -> None:
        self._path = path
        self._name = spec.name
        self._pre = preprocess.resolve(spec)
        self._limits = limits
        self._zip = path.is_file()
        if self._zip:
            self._members = safe_zip_members(path, IMAGE_SUFFIXES, limits)
        else:
            root = path.resolve()
            files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            # never follow links out of the folder the user gave
            self._members = [str(p.relative_to(root)) for p in files if p.resolve().is_relative_to(root)]
        if not self._members:
            raise DataError(f"'{path.name}' contains no images ({', '.join(IMAGE_SUFFIXES)}); add images or pick another folder.")
        for m in self._members[:1]:
            self._decode(m)  # fail early on an unreadable first image

    @property
    def input_names(self) -> tuple[str, ...]:
        return (self._name,)

    @property
    def num_samples(self) -> int:
        return len(self._members)

    @property
    def preprocess(self) -> ImagePreprocess:
        return self._pre

    def sample_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        c = 1 if self._pre.color == "GRAY" else 3
        h, w = self._pre.height, self._pre.width
        shape = (c, h, w) if self._pre.layout == "NCHW" else (h, w, c)
        return {self._name: (shape, "float32")}

    def _decode(self, member: str) -> np.ndarray:
        raw = read_member(self._path, member, self._limits) if self._zip else (self._path / member).read_bytes()
        return decode_image(raw, member, self._pre)

    def content_digest(self) -> str | None:
        return None  # decoding every image costs about as much as calibrating on it

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self._members), batch_size):
            chunk = self._members[start : start + batch_size]
            yield {self._name: np.stack([self._decode(m) for m in chunk])}


def decode_image(raw: bytes, name: str, pre: ImagePreprocess) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise DataError(f"Image '{name}' is {img.width}x{img.height} pixels, over the {MAX_IMAGE_PIXELS}-pixel limit; resize it first.")
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise DataError(f"Image '{name}' has {img.mode} pixels (16-bit or float); convert it to 8-bit RGB or grayscale first.")
            img.load()
            return pre.apply(img)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"Image '{name}' declares an enormous size (a decompression bomb); QuantScope refuses it.") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"Image '{name}' cannot be decoded ({type(err).__name__}); check that it is a valid PNG or JPEG file.") from None
