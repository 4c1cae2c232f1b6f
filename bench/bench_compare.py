"""Benchmark: our compare vs the floor vs the Polygraphy CLI two-step, in one script run.

    python bench/bench_compare.py [--samples 80] [--batch 4] [--skip-polygraphy]

Each measurement runs in a fresh child process so its wall time and peak RSS (ru_maxrss) are its own.
Models: the bundled resnet_digits_outlier, and a ResNet-18-shaped 224x224 CNN with random weights
generated here (no downloads). Prints a table and the ratios; writes bench/out/results.json."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from bench.models import resnet18_224  # noqa: E402


# ---------------------------------------------------------------- models and data
def polygraphy_inputs(x: np.ndarray, batch: int, path: Path) -> None:
    import base64
    import io

    feeds = []
    for i in range(0, len(x), batch):
        buf = io.BytesIO()
        np.save(buf, x[i : i + batch], allow_pickle=False)
        feeds.append({"input": {"array": base64.b64encode(buf.getvalue()).decode(), "polygraphy_class": "ndarray"}})
    path.write_text(json.dumps(feeds))


# ---------------------------------------------------------------- the measured jobs (run in children)
def job_ours(model, data, batch, out):
    import engine

    engine.compare(model, data, out_dir=out, batch_size=batch, provider="cpu")


def job_rebuild(out, node):
    import engine

    engine.rebuild(out, fallback=[node])


def job_candidate_only(out):
    """One candidate pass with every observed tensor marked, no metrics: what a rebuild cannot avoid."""
    import onnx

    from engine.backends.onnxrt import OnnxRuntimeBackend
    from engine.compare.graph import observe
    from engine.compare.reference_cache import ReferenceCache

    ref, cand = onnx.load(Path(out) / "reference.onnx"), onnx.load(Path(out) / "candidate.onnx")
    view = observe(ref, cand)
    with OnnxRuntimeBackend("cpu").runner(cand, observe=view.names) as r:
        for inputs, _ in ReferenceCache(Path(out) / "cache").batches():
            r.infer(inputs)


def job_floor(model, data, batch):
    """ORT quantize_static on the same data + both models with every tensor marked; no metrics."""
    import tempfile

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    x = np.load(data)["input"]

    class Reader:
        def __init__(self):
            self.it = iter(range(0, len(x), batch))

        def get_next(self):
            i = next(self.it, None)
            return None if i is None else {"input": x[i : i + batch]}

    with tempfile.TemporaryDirectory() as tmp:
        pre, q = f"{tmp}/pre.onnx", f"{tmp}/q.onnx"
        quant_pre_process(model, pre)
        quantize_static(pre, q, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv", "Gemm"], per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        for path in (pre, q):
            m = onnx.load(path)
            names = {o.name for o in m.graph.output}
            for n in m.graph.node:
                for o in n.output:
                    if o not in names and n.op_type not in ("QuantizeLinear",):
                        m.graph.output.append(onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None))
                        names.add(o)
            sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
            for i in range(0, len(x), batch):
                sess.run(None, {"input": x[i : i + batch]})


def run_child(name: str, *args: str) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--job", name, *args], cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"job {name} failed")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def run_cmd(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return {"wall_s": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "exit": os.waitstatus_to_exitcode(status)}


def bench_model(label: str, model: Path, data: Path, batch: int, work: Path, polygraphy: bool, top_node: str | None) -> dict:
    res = {"model": label}
    out = work / f"{label}_run"
    shutil.rmtree(out, ignore_errors=True)
    res["ours"] = run_child("ours", str(model), str(data), str(batch), str(out))
    res["floor"] = run_child("floor", str(model), str(data), str(batch))
    node = top_node or json.loads((out / "summary.json").read_text())["culprits"][0]
    res["rebuild"] = run_child("rebuild", str(out), node)
    res["candidate_only"] = run_child("candidate_only", str(out))
    if polygraphy:
        exe = shutil.which("polygraphy") or str(Path(sys.executable).with_name("polygraphy"))
        inputs = work / f"{label}_inputs.json"
        polygraphy_inputs(np.load(data)["input"], batch, inputs)
        golden = work / f"{label}_golden.json"
        a = run_cmd([exe, "run", str(out / "reference.onnx"), "--onnxrt", "--onnx-outputs", "*", "--load-inputs", str(inputs),
                     "--save-outputs", str(golden)])
        b = run_cmd([exe, "run", str(out / "candidate.onnx"), "--onnxrt", "--onnx-outputs", "*", "--load-inputs", str(inputs),
                     "--load-outputs", str(golden), "--compare", "cosine_similarity", "snr"])
        res["polygraphy"] = {"wall_s": round(a["wall_s"] + b["wall_s"], 2), "peak_rss_mb": max(a["peak_rss_mb"], b["peak_rss_mb"])}
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--job")
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--samples", type=int, default=80)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--skip-polygraphy", action="store_true")
    args = ap.parse_args()
    if args.job:
        r = args.rest
        {"ours": lambda: job_ours(r[0], r[1], int(r[2]), r[3]), "floor": lambda: job_floor(r[0], r[1], int(r[2])),
         "rebuild": lambda: job_rebuild(r[0], r[1]), "candidate_only": lambda: job_candidate_only(r[0])}[args.job]()
        return
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "work"
    work.mkdir(exist_ok=True)
    results = []
    sample_data = work / "digits_80.npz"
    np.savez(sample_data, input=np.load(ROOT / "sample_models" / "digits_eval.npz")["input"][: args.samples])
    results.append(bench_model("resnet_digits_outlier", ROOT / "sample_models" / "resnet_digits_outlier.onnx", sample_data,
                               args.batch, work, not args.skip_polygraphy, None))
    big = work / "resnet18_224.onnx"
    if not big.exists():
        resnet18_224(big)
    rng = np.random.default_rng(0)
    for n in (args.samples, 2 * args.samples):
        d = work / f"img224_{n}.npz"
        np.savez(d, input=rng.standard_normal((n, 3, 224, 224)).astype(np.float32))
    results.append(bench_model("resnet18_224", big, work / f"img224_{args.samples}.npz", args.batch, work, not args.skip_polygraphy, None))
    doubled = run_child("ours", str(big), str(work / f"img224_{2 * args.samples}.npz"), str(args.batch), str(work / "doubled_run"))
    results[-1]["ours_2x_samples"] = doubled

    print(f"\n{'model':24} {'ours s':>8} {'floor s':>8} {'ours/floor':>10} {'RSS MB':>8} {'rebuild/cand':>12} {'polygraphy s':>13} {'poly RSS MB':>11} {'poly/ours':>9}")
    for r in results:
        ratio = r["ours"]["wall_s"] / r["floor"]["wall_s"]
        rb = r["rebuild"]["wall_s"] / r["candidate_only"]["wall_s"]
        poly = r.get("polygraphy", {})
        print(f"{r['model']:24} {r['ours']['wall_s']:8.2f} {r['floor']['wall_s']:8.2f} {ratio:10.2f} {r['ours']['peak_rss_mb']:8.0f} "
              f"{rb:12.2f} {poly.get('wall_s', float('nan')):13.2f} {poly.get('peak_rss_mb', float('nan')):11.0f} "
              f"{poly.get('wall_s', float('nan')) / r['ours']['wall_s']:9.1f}")
    d = results[-1]["ours_2x_samples"]
    print(f"resnet18_224 with {2 * args.samples} samples: ours {d['wall_s']:.2f} s, peak RSS {d['peak_rss_mb']:.0f} MB "
          f"(vs {results[-1]['ours']['peak_rss_mb']:.0f} MB at {args.samples})")
    print("note: wall times include each child's Python start-up and imports (~2-3 s), the same for ours and the floor.")
    (OUT / "results.json").write_text(json.dumps({"samples": args.samples, "batch": args.batch, "results": results}, indent=2))


if __name__ == "__main__":
    main()
