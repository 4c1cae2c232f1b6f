"""The `quantscope compare` command that reproduces a run's current build exactly: from the run's own settings
(config.json, engine.RunConfig) and the files it compared, named as the user knows them. Pure: values in, text out."""

from __future__ import annotations

import shlex

import engine
from app.inputs import Inputs

__all__ = ["cli_command", "image_flags"]

DEFAULT_SCREEN_SAMPLES = 32


def _num(x: float) -> str:
    return repr(float(x)) if float(x) != int(x) else str(int(x))


def image_flags(images: engine.ImagePreprocess) -> list[str]:
    """--image-* flags for every preprocessing choice (so the command does not depend on the CLI's defaults)."""
    flags = []
    if images.layout:
        flags.append(f"--image-layout {images.layout}")
    if images.color:
        flags.append(f"--image-color {images.color}")
    if images.height and images.width:
        flags.append(f"--image-size {images.height}x{images.width}")
    flags += [f"--image-scale {_num(images.scale)}", f"--image-mean {','.join(_num(v) for v in images.mean)}",
              f"--image-std {','.join(_num(v) for v in images.std)}"]
    return flags


def cli_command(config: engine.RunConfig, inputs: Inputs | None, out: str = "runs/triage") -> str:
    """`inputs`: the files this run compared (None when this session does not know them: placeholders then)."""
    q = config.quant

    def name(role: str, placeholder: str) -> str | None:
        if inputs is None:
            return placeholder if role in ("model", "calib") else None
        given = inputs.user_name(role)
        return shlex.quote(given) if given else None

    parts = [f"quantscope compare {name('model', shlex.quote(config.model))}", f"--calib {name('calib', 'CALIBRATION_DATA')}"]
    if (data := name("data", "")) is not None:
        parts.append(f"--data {data}")
    if (labels := name("labels", "")) is not None:
        parts.append(f"--labels {labels}")
    parts += [f"--batch {config.batch_size}", f"--calib-method {q.calibration.value}"]
    if q.calibration is engine.CalibrationMethod.PERCENTILE:
        parts.append(f"--percentile {_num(q.percentile)}")
    parts += ["--op-types " + " ".join(q.op_types), f"--provider {config.requested_provider}"]
    if q.precision.value != "int8":
        parts.append(f"--precision {q.precision.value}")
    if config.screen_samples != DEFAULT_SCREEN_SAMPLES:
        parts.append(f"--screen-samples {config.screen_samples}")
    if q.fallback:
        parts.append("--fallback " + " ".join(shlex.quote(n) for n in engine.in_name_order(q.fallback)))
        parts.append(f"--fallback-precision {q.fallback_precision.value}")
    parts += [f"--range {shlex.quote(str(r))}" for r in q.ranges]
    images = config.images or (inputs.images if inputs is not None else None)
    if inputs is not None and inputs.uses_images and images is not None:
        parts += image_flags(images)
    parts.append(f"--out {out}")
    return " \\\n  ".join(parts)
