"""Ray against serial, for sensitivity probes and for a calibration sweep, with the results compared.

    python bench/bench_scale.py --model M.onnx --data D.npz [--provider cuda] [--batch 4] [--parts sensitivity,sweep] [--rounds 3]

Serial runs in this process; Ray starts a local runtime (`--ray auto`: this machine's cores, and an actor a GPU). The Ray runtime's start and its actors' first sessions are timed apart (a warm-up probe
round), as they are paid once per session. Prints the card or CPU; writes $OUT/scale_bench.json (or bench/out)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from engine.scale import SerialExecutor, open_executor  # noqa: E402
from engine.sweep import sweep  # noqa: E402


def where() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001
        pass
    return f"{os.cpu_count()} CPU cores"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--provider", default="cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--samples", type=int, default=0, help="sensitivity samples (0: all)")
    ap.add_argument("--parts", default="sensitivity,sweep")
    ap.add_argument("--rounds", type=int, default=1, help="sensitivity: serial and Ray alternated this many times (this "
                    "host's timings drift by tens of percent; alternating keeps the comparison fair)")
    args = ap.parse_args()
    out = Path(os.environ.get("OUT", ROOT / "bench" / "out"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/qs_scale_bench")
    res: dict = {"where": where(), "model": args.model.name, "provider": args.provider}
    run = work / "run"
    engine.compare(args.model, args.data, out_dir=run, batch_size=args.batch, provider=args.provider, screen_samples=0)
    t0 = time.perf_counter()
    ex = open_executor("auto")
    res["ray_start_s"] = round(time.perf_counter() - t0, 2)
    res["executor"] = ex.name
    try:
        if "sensitivity" in args.parts:
            samples = args.samples or None
            t0 = time.perf_counter()
            local = engine.sensitivity(run, samples=samples)  # the default pool
            local_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            engine.sensitivity(run, samples=4, pools=ex.probe_pool)  # actors start, build their sessions, warm up
            warm_s = time.perf_counter() - t0
            rounds = []
            for _ in range(max(1, args.rounds)):
                t0 = time.perf_counter()
                serial = engine.sensitivity(run, samples=samples, pools=SerialExecutor().probe_pool)  # one probe at a time
                serial_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                on_ray = engine.sensitivity(run, samples=samples, pools=ex.probe_pool)
                ray_s = time.perf_counter() - t0
                cols = [c for c in serial.columns if c != "probe_seconds"]
                rounds.append({"serial_s": round(serial_s, 2), "ray_s": round(ray_s, 2), "speedup": round(serial_s / ray_s, 2),
                               "identical": bool(serial[cols].set_index("node").equals(on_ray[cols].set_index("node")))})
                print("sensitivity round", rounds[-1], flush=True)
            res["sensitivity"] = {"units": len(serial), "probes": 2 * len(serial) + 1, "local_default_s": round(local_s, 2),
                                  "local_identical": bool(serial[cols].set_index("node").equals(local[cols].set_index("node"))),
                                  "ray_warmup_s": round(warm_s, 2), "rounds": rounds,
                                  "speedup": [r["speedup"] for r in rounds], "identical": all(r["identical"] for r in rounds)}
            print("sensitivity", res["sensitivity"], flush=True)
        if "sweep" in args.parts:
            kw = {"methods": ("minmax", "entropy", "percentile"), "batch_size": args.batch, "provider": args.provider,
                  "latency_runs": 0, "screen_samples": 8}
            t0 = time.perf_counter()
            a = sweep([args.model], args.data, out_dir=work / "sw_serial", **kw)
            serial_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            b = sweep([args.model], args.data, out_dir=work / "sw_ray", executor=ex, **kw)
            ray_s = time.perf_counter() - t0
            keep = ["config", "snr_db", "cosine", "culprit", "best"]
            res["sweep"] = {"configurations": len(a.rows), "serial_s": round(serial_s, 2), "ray_s": round(ray_s, 2),
                            "speedup": round(serial_s / ray_s, 2), "identical": bool(a.to_frame()[keep].equals(b.to_frame()[keep])),
                            "serial_timings": a.timings, "ray_timings": b.timings}
            print("sweep", {k: v for k, v in res["sweep"].items() if "timings" not in k}, flush=True)
    finally:
        ex.close()
    (out / "scale_bench.json").write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps(res, default=str))


if __name__ == "__main__":
    main()
