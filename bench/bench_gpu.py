"""GPU benchmark (run on the GPU host): a ResNet-50-shaped 224x224 model at batch 8.

Measures on ONNX Runtime CUDA, after one warm-up comparison:
  ours_device   the layerwise loop with metrics computed on the GPU (both marked runs + unmodified candidate)
  ours_host     the same loop copying every marked tensor to the host and reducing with numpy
  plain         plain inference of both models (reference and candidate, no extra outputs)
and CPU-vs-GPU metric agreement on the sample models. Prints the card name; writes $OUT or bench/out."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from bench.models import resnet50_224  # noqa: E402
from engine.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402

PROVIDER = os.environ.get("QS_BENCH_PROVIDER", "cuda")  # cpu: a smoke run of this script without a GPU
LOOP = ("reference", "candidate", "metrics", "final_outputs")


def card() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        return "unknown GPU"


def loop_seconds(result) -> float:
    return sum(result.summary.timings.get(k, 0.0) for k in LOOP)


def plain_seconds(run: Path, x: np.ndarray, batch: int) -> float:
    """Both models, no extra outputs, after one warm-up batch each."""
    import onnx

    backend = OnnxRuntimeBackend(PROVIDER)
    total = 0.0
    for name in ("reference.onnx", "candidate.onnx"):
        with backend.runner(onnx.load(run / name)) as r:
            r.infer({"input": x[:batch]})  # warm-up
            t0 = time.perf_counter()
            for i in range(0, len(x), batch):
                r.infer({"input": x[i : i + batch]})
            total += time.perf_counter() - t0
    return total


def main() -> None:
    out = Path(os.environ.get("OUT", ROOT / "bench" / "out"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/qs_gpu_bench")
    work.mkdir(exist_ok=True)
    model = work / "resnet50_224.onnx"
    if not model.exists():
        resnet50_224(model)
    batch, n = 8, int(os.environ.get("QS_BENCH_SAMPLES", "128"))
    x = np.random.default_rng(0).standard_normal((n, 3, 224, 224)).astype(np.float32)
    np.savez(work / "data.npz", input=x)
    np.savez(work / "calib.npz", input=x[: min(32, n)])
    kw = {"data": work / "data.npz", "batch_size": batch, "provider": PROVIDER}
    engine.compare(model, work / "calib.npz", out_dir=work / "warm", **{**kw, "data": work / "calib.npz"})  # warm-up
    dev = engine.compare(model, work / "calib.npz", out_dir=work / "dev", **kw)
    own = OnnxRuntimeBackend.__dict__["keeps_outputs_on_device"]
    OnnxRuntimeBackend.keeps_outputs_on_device = property(lambda self: False)
    try:
        host = engine.compare(model, work / "calib.npz", out_dir=work / "host", **kw)
    finally:
        OnnxRuntimeBackend.keeps_outputs_on_device = own
    plain = plain_seconds(work / "dev", x, batch)
    res = {
        "card": card(), "model": "resnet50-shaped 224x224, random weights", "samples": n, "batch": batch,
        "layers": len(dev.layers),
        "ours_device_s": round(loop_seconds(dev), 3), "ours_host_copies_s": round(loop_seconds(host), 3), "plain_both_s": round(plain, 3),
        "device_timings": dev.summary.timings, "host_timings": host.summary.timings,
        "max_abs_snr_diff_device_vs_host_db": float(np.nanmax(np.abs(
            np.where(np.isinf(dev.layers["snr_db"]), 0, dev.layers["snr_db"]) - np.where(np.isinf(host.layers["snr_db"]), 0, host.layers["snr_db"])))),
        "max_abs_cosine_diff_device_vs_host": float(np.nanmax(np.abs(dev.layers["cosine"] - host.layers["cosine"]))),
    }
    res["ratio_device_vs_plain"] = round(res["ours_device_s"] / plain, 2)
    # steady state: batches after the first (which carries each session's cuDNN warm-up), per batch
    steady = dev.summary.timings["steady_loop"] / dev.summary.timings["steady_batches"]
    res["ours_device_ms_per_batch_steady"] = round(1000 * steady, 2)
    res["plain_both_ms_per_batch"] = round(1000 * plain / (n // batch), 2)
    res["ratio_device_vs_plain_steady"] = round(steady / (plain / (n // batch)), 2)
    res["ratio_host_vs_plain"] = round(res["ours_host_copies_s"] / plain, 2)
    s = ROOT / "sample_models"
    agree = {}
    for name in ("resnet_digits", "resnet_digits_outlier"):
        a = engine.compare(s / f"{name}.onnx", s / "digits_calib.npz", out_dir=work / f"{name}_cpu", data=s / "digits_eval.npz", batch_size=50, provider="cpu")
        b = engine.compare(s / f"{name}.onnx", s / "digits_calib.npz", out_dir=work / f"{name}_gpu", data=s / "digits_eval.npz", batch_size=50, provider=PROVIDER)
        fin = lambda v: np.where(np.isinf(v), 0, v)  # noqa: E731
        agree[name] = {"max_cosine_diff": float(np.abs(a.layers["cosine"] - b.layers["cosine"]).max()),
                       "max_snr_diff_db": float(np.abs(fin(a.layers["snr_db"]) - fin(b.layers["snr_db"])).max()),
                       "final_snr_cpu": a.final_output().snr_db, "final_snr_gpu": b.final_output().snr_db,
                       "same_top_culprit": a.summary.culprits[0].node == b.summary.culprits[0].node}
    res["cpu_vs_gpu"] = agree
    print(json.dumps(res, indent=2))
    (out / "gpu_bench.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
