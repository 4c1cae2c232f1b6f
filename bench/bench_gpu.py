"""GPU benchmark (run on the GPU host, ONNX Runtime CUDA): the numbers issues #11, #14, #15 and #16 ask of a GPU.

    python bench/bench_gpu.py --model DETECTOR.onnx --data DATA.npz [--parts loop,cli,rebuild,rank,ray,agree]

  loop     the steady layerwise loop (batches after the first) per batch, against plain inference of both models,
           at batch 1 and 4
  cli      `quantscope compare` from the command line twice on the same model: wall time, pre-processing cached the
           second time
  rebuild  a rebuild (one node in fallback) against a candidate-only pass with every observed tensor marked
  rank     the ranking stage against the rest of the compare
  probes   ms a probe on 2, 8 and all samples, probe data resident on the device against copied in each probe
  ray      sensitivity serial against --ray auto (actors sharing the GPU), results compared
  agree    CPU vs GPU metrics on the bundled samples
Prints the card; writes $OUT/gpu_bench.json (or bench/out)."""

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
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from engine.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402

LOOP = ("reference", "candidate", "metrics", "final_outputs")


def card() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        return "unknown GPU"


def plain_ms(run: Path, data: dict, batch: int, provider: str) -> float:
    """Both models (reference and candidate), no extra outputs, per batch, after a warm-up batch."""
    import onnx

    backend = OnnxRuntimeBackend(provider)
    n = len(next(iter(data.values())))
    total, count = 0.0, 0
    for name in ("reference.onnx", "candidate.onnx"):
        with backend.runner(onnx.load(run / name)) as r:
            r.infer({k: v[:batch] for k, v in data.items()})
            t0 = time.perf_counter()
            count = 0
            for i in range(0, n - batch + 1, batch):
                r.infer({k: v[i : i + batch] for k, v in data.items()})
                count += 1
            total += time.perf_counter() - t0
    return 1000 * total / count


def part_loop(model: Path, data: Path, work: Path, provider: str) -> dict:
    arrays = dict(np.load(data))
    res = {}
    for batch in (1, 4):
        kw = {"data": data, "batch_size": batch, "provider": provider, "screen_samples": 0}
        engine.compare(model, data, out_dir=work / f"warm{batch}", **kw)
        r = engine.compare(model, data, out_dir=work / f"loop{batch}", **kw)
        t = r.summary.timings
        steady = 1000 * t["steady_loop"] / t["steady_batches"]
        plain = plain_ms(work / f"loop{batch}", arrays, batch, provider)
        res[f"batch{batch}"] = {"steady_ms_per_batch": round(steady, 2), "plain_both_ms_per_batch": round(plain, 2),
                                "ratio": round(steady / plain, 2), "timings": t, "observed_tensors": int(len(r.layers)),
                                "passes": r.summary.passes}
    return res


def part_cli(model: Path, data: Path, work: Path, provider: str) -> dict:
    env = {**os.environ, "QUANTSCOPE_RUNS_ROOT": str(work / "cli_root")}
    shutil.rmtree(work / "cli_root", ignore_errors=True)
    walls = []
    for k in range(2):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "engine.cli.main", "compare", str(model), "--calib", str(data), "--batch", "4",
                        "--provider", provider, "--out", str(work / f"cli{k}"), "--quiet", "--no-index"], check=True, env=env, cwd=ROOT)
        walls.append(time.perf_counter() - t0)
    timings = [json.loads((work / f"cli{k}" / "summary.json").read_text())["timings"] for k in range(2)]
    return {"first_wall_s": round(walls[0], 2), "second_wall_s": round(walls[1], 2),
            "preprocess_first_s": timings[0]["preprocess"], "preprocess_second_s": timings[1]["preprocess"],
            "second_timings": timings[1]}


def candidate_pass_s(run: Path, provider: str) -> float:
    import onnx

    from engine.compare.graph import observe
    from engine.compare.reference_cache import ReferenceCache
    from engine.quantize.config import TRT_INT8_OP_TYPES

    ref, cand = onnx.load(run / "reference.onnx"), onnx.load(run / "candidate.onnx")
    view = observe(ref, cand, TRT_INT8_OP_TYPES)
    backend = OnnxRuntimeBackend(provider)
    t0 = time.perf_counter()
    with backend.runner(cand, observe=view.names, on_device=provider == "cuda") as r:
        for inputs, _ in ReferenceCache(run / "cache").batches():
            r.infer(inputs)
    return time.perf_counter() - t0


def part_rebuild(model: Path, data: Path, work: Path, provider: str) -> dict:
    out = work / "rb"
    first = engine.compare(model, data, out_dir=out, batch_size=4, provider=provider)
    node = first.summary.culprits[0].node
    t0 = time.perf_counter()
    rebuilt = engine.rebuild(out, fallback=[node])
    rebuild_s = time.perf_counter() - t0
    cand = candidate_pass_s(out, provider)
    # then the quantized node furthest along the graph ticked too: the rows before it are read back (tensor_keys)
    layers = rebuilt.layers
    late = layers[layers["quantized"] & (layers["node"] != node)].sort_values("order")["node"].iloc[-1]
    t0 = time.perf_counter()
    again = engine.rebuild(out, fallback=[node, late])
    late_s = time.perf_counter() - t0
    return {"rebuild_s": round(rebuild_s, 3), "candidate_pass_s": round(cand, 3), "ratio": round(rebuild_s / cand, 2),
            "rank_s": first.summary.timings.get("rank"), "timings": first.summary.timings,
            "rebuild_timings": rebuilt.summary.timings, "late_node": late, "late_rebuild_s": round(late_s, 3),
            "late_ratio": round(late_s / cand, 2), "late_timings": again.summary.timings}


def part_rank(model: Path, data: Path, work: Path, provider: str) -> dict:
    """The ranking stage against the rest of the same compare, first (cold caches) and again (pre-processing cached)."""
    res = {}
    for k, when in enumerate(("first", "second")):
        r = engine.compare(model, data, out_dir=work / f"rank{k}", batch_size=4, provider=provider)
        t = r.summary.timings
        rest = sum(t.get(k, 0.0) for k in ("load", "preprocess", "calibrate", "quantize", "compare"))
        res[when] = {"rank_s": round(t["rank"], 3), "rest_s": round(rest, 3), "ratio": round(t["rank"] / rest, 2),
                     "probes": r.summary.ranking.probes, "ms_per_probe": round(1000 * t["rank"] / max(r.summary.ranking.probes, 1), 1),
                     "plan": r.summary.ranking.plan, "view": r.summary.ranking.view, "headline": r.summary.headline,
                     "timings": t}
    return res


def part_probes(model: Path, data: Path, work: Path, provider: str) -> dict:
    """Milliseconds a probe on 2, 8 and all samples, with the probe data resident on the device and scored there, against
    the same probes copied in and scored on the host."""
    import dataclasses

    from engine.diagnose.probes import OutputProbe
    from engine.diagnose.run_probe import open_probe

    out = work / "probes"
    engine.compare(model, data, out_dir=out, batch_size=4, provider=provider, screen_samples=0)
    _, _, probe = open_probe(out, provider, samples=None)
    host_backend = OnnxRuntimeBackend(provider)
    host_backend.capabilities = dataclasses.replace(host_backend.capabilities, device_outputs=False)
    host = OutputProbe(host_backend, probe.reference, probe.candidate, probe.units, probe.data, probe.emit, probe.fp16)
    res: dict = {"units": len(probe.units), "samples": probe.data.samples}
    with probe, host:
        for name, p in (("resident", probe), ("host", host)):
            for n in (2, 8, probe.data.samples):
                d = probe.data.head(n)
                p.measure((), d)  # warm-up: buffers, copies
                t0 = time.perf_counter()
                snrs = [p.measure_only(u, d).outputs_snr_db for u in probe.units[:20]]
                res[f"{name}_{n}_ms_per_probe"] = round(1000 * (time.perf_counter() - t0) / 20, 2)
                res[f"{name}_{n}_snr_sum"] = round(float(sum(snrs)), 4)
    return res


def part_ray(model: Path, data: Path, work: Path, provider: str) -> dict:
    from engine.scale import open_executor

    out = work / "rayrun"
    engine.compare(model, data, out_dir=out, batch_size=4, provider=provider, screen_samples=0)
    t0 = time.perf_counter()
    serial = engine.sensitivity(out, samples=None)
    serial_s = time.perf_counter() - t0
    ex = open_executor("auto")
    try:
        engine.sensitivity(out, samples=8, pools=ex.probe_pool)  # actors start and warm up
        t0 = time.perf_counter()
        on_ray = engine.sensitivity(out, samples=None, pools=ex.probe_pool)
        ray_s = time.perf_counter() - t0
        name = ex.name
    finally:
        ex.close()
    cols = [c for c in serial.columns if c != "probe_seconds"]
    same = serial[cols].set_index("node").equals(on_ray[cols].set_index("node"))
    return {"units": len(serial), "serial_s": round(serial_s, 2), "ray_s": round(ray_s, 2), "speedup": round(serial_s / ray_s, 2),
            "identical": bool(same), "executor": name}


def part_agree(work: Path, provider: str) -> dict:
    s = ROOT / "sample_models"
    agree = {}
    for name in ("resnet_digits", "resnet_digits_outlier"):
        kw = {"data": s / "digits_eval.npz", "batch_size": 50}
        a = engine.compare(s / f"{name}.onnx", s / "digits_calib.npz", out_dir=work / f"{name}_cpu", provider="cpu", **kw)
        b = engine.compare(s / f"{name}.onnx", s / "digits_calib.npz", out_dir=work / f"{name}_gpu", provider=provider, **kw)
        fin = lambda v: np.where(np.isinf(v), 0, v)  # noqa: E731
        agree[name] = {"max_cosine_diff": float(np.abs(a.layers["cosine"] - b.layers["cosine"]).max()),
                       "max_snr_diff_db": float(np.abs(fin(a.layers["snr_db"]) - fin(b.layers["snr_db"])).max()),
                       "final_snr_cpu": a.final_output().snr_db, "final_snr_gpu": b.final_output().snr_db,
                       "same_top_culprit": a.summary.culprits[0].node == b.summary.culprits[0].node}
    return agree


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--provider", default="cuda")
    ap.add_argument("--parts", default="loop,cli,rebuild,rank,ray,agree")
    args = ap.parse_args()
    out = Path(os.environ.get("OUT", ROOT / "bench" / "out"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/qs_gpu_bench")
    work.mkdir(exist_ok=True)
    res = {"card": card(), "model": args.model.name}
    parts = {"loop": lambda: part_loop(args.model, args.data, work, args.provider),
             "cli": lambda: part_cli(args.model, args.data, work, args.provider),
             "rebuild": lambda: part_rebuild(args.model, args.data, work, args.provider),
             "rank": lambda: part_rank(args.model, args.data, work, args.provider),
             "ray": lambda: part_ray(args.model, args.data, work, args.provider),
             "probes": lambda: part_probes(args.model, args.data, work, args.provider),
             "agree": lambda: part_agree(work, args.provider)}
    for name in args.parts.split(","):
        t0 = time.perf_counter()
        try:
            res[name] = parts[name]()
        except Exception as err:  # noqa: BLE001 - one part failing keeps the others
            res[name] = {"error": f"{type(err).__name__}: {err}"[:500]}
        res[name]["part_s"] = round(time.perf_counter() - t0, 1)
        print(name, json.dumps(res[name])[:600], flush=True)
        (out / "gpu_bench.json").write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
