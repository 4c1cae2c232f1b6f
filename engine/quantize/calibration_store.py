"""Calibrations kept under the runs root by everything that decides their ranges, so a second compare of the same model
on the same calibration data (with other fallback, precision, per-channel or evaluation data) does not calibrate again.

The key: the prepared model (the digest of the user's model and the pre-processing version; FP8 calibrates its opset-19
twin), the calibration data's content digest, the method and its percentile (entropy: its search's version), the quantized op types (they choose the calibrated tensors), the batch
size (histogram methods grow their histograms batch by batch), whether the batch is dynamic (MinMax then cuts it) and
ONNX Runtime's version. Data without a cheap digest (image folders: decoding them is the cost) is calibrated each time.

Beside a calibration, the all-INT8 graph emitted from it (one per op types and ranges: base_key) is kept too, so that
second compare does not run ONNX Runtime's quantizer again either (0.26 s on MobileNetV3 here, 0.57 s on the H100 host
for YOLOv8n). Its file name holds both keys: what a file holds never depends on which process wrote last."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from engine.cache_files import write_atomic
from engine.data.source import BatchSource
from engine.quantize.calibration import BATCHES_PER_CHUNK, CollectPlan
from engine.quantize.config import CalibrationMethod, QuantConfig
from engine.quantize.emit import base_key
from engine.quantize.entropy import ENTROPY_VERSION
from engine.quantize.preprocess import PREPROCESS_VERSION

__all__ = ["CALIBRATION_STORE", "calibration_key", "take", "keep", "take_base", "keep_base"]

CALIBRATION_STORE = "calibration-cache"  # under the runs root


def calibration_key(model_digest: str, source: BatchSource, config: QuantConfig, batch_size: int, dynamic_batch: bool,
                    plan: CollectPlan | None = None) -> str | None:
    """The store's key for this calibration, or None where it cannot be reused (no model digest, or data without one).
    plan: how a histogram method's data was cut (collect_plan), where it is not the usual whole batches, four a collect."""
    import onnxruntime

    data = source.content_digest()
    if not model_digest or data is None:
        return None
    what = {"model": f"{PREPROCESS_VERSION}-{model_digest}", "precision": config.precision.value, "data": data,
            "method": config.calibration.value, "percentile": config.percentile, "op_types": sorted(config.op_types), "batch": batch_size,
            "dynamic_batch": dynamic_batch, "onnxruntime": onnxruntime.__version__}
    if config.calibration is not CalibrationMethod.MINMAX and plan is not None and plan != CollectPlan(None, BATCHES_PER_CHUNK):
        what["collect"] = [plan.part, plan.runs]  # histograms grow through the collects: another cut, other ranges
    if config.calibration is CalibrationMethod.ENTROPY:
        what["entropy"] = ENTROPY_VERSION  # the search's version: ORT's degenerate 128/128 one gave MinMax's ranges
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def take(store: Path, key: str | None, dest: Path) -> bool:
    """Copies the kept calibration to `dest`; whether there was one."""
    if key is None:
        return False
    try:
        shutil.copyfile(store / f"{key}.json", dest)
        return True
    except OSError:
        return False


def keep(store: Path, key: str | None, calibration: Path) -> None:
    """Keeps a copy of `calibration` under `key`, atomically; never fatal (a calibration not kept only costs time)."""
    if key is not None:
        write_atomic(store / f"{key}.json", lambda tmp: shutil.copyfile(calibration, tmp), "calibration cache")


def _base_name(key: str, config: QuantConfig) -> str:
    quant = hashlib.sha256(json.dumps(base_key(config), sort_keys=True).encode()).hexdigest()[:16]
    return f"{key}.int8-{quant}.onnx"


def take_base(store: Path, key: str | None, config: QuantConfig, dest: Path) -> bool:
    """Copies the all-INT8 graph kept for this calibration and quantization to `dest`, with the key file beside it that
    emit_candidate checks (dest.json); whether there was one."""
    if key is None:
        return False
    try:
        shutil.copyfile(store / _base_name(key, config), dest)
        dest.with_suffix(".json").write_text(json.dumps(base_key(config)))
        return True
    except OSError:
        dest.unlink(missing_ok=True)
        return False


def keep_base(store: Path, key: str | None, config: QuantConfig, base: Path) -> None:
    """Keeps a copy of the run's all-INT8 graph `base` beside its calibration; never fatal."""
    if key is not None and base.is_file():
        write_atomic(store / _base_name(key, config), lambda tmp: shutil.copyfile(base, tmp), "INT8 graph cache")
