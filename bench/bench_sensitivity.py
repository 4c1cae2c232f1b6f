"""Benchmark: what diagnosis costs against one `compare` of the same model and data, measured in the same run.

    python bench/bench_sensitivity.py [--models sample mobilenetv3] [--json bench/out/sensitivity.json]

Per model (the bundled `sample`, or a real third-party model of bench/real_models.py with its real images):
  compare        one `compare` (wall time, its ranking stage included)
  sensitivity    every quantizable node in both isolated views          target <= 3x the compare (issue 11)
  autofallback   the search to a target (both strategies, then the set applied by a rebuild)   target <= 5x
  sweep          MinMax, Entropy and Percentile, one shared calibration pass and reference    target <= 2x (issue 15)
The autofallback target: the sample's clean twin's INT8 SNR - 1 dB; a real model: its all-INT8 final-output SNR
+ 10 dB (what the Layers page's first fix usually aims at). All serial, on this machine's CPU. Each model gets a
fresh runs root, so the compare calibrates and pre-processes as a user's first compare does (an earlier bench run's
calibration store would otherwise spare it the calibration the sweep must do)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402

OUT = ROOT / "bench" / "out"


def _inputs(name: str, tmp: Path):
    """(model, data, labels, batch, autofallback target or None: decided from the compare)."""
    if name == "sample":
        s = ROOT / "sample_models"
        data, labels = tmp / "eval32.npz", tmp / "labels32.npy"
        np.savez(data, input=np.load(s / "digits_eval.npz")["input"][:32])
        np.save(labels, np.load(s / "digits_eval_labels.npy")[:32])
        clean = engine.compare(s / "resnet_digits.onnx", s / "digits_calib.npz", data=data, out_dir=tmp / "clean", batch_size=8,
                               provider="cpu")
        return s / "resnet_digits_outlier.onnx", data, labels, 8, clean.final_output().snr_db - 1
    from bench.real_models import get

    m = get(name)
    return m.path, m.data, m.labels, m.batch, None


def measure(name: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["QUANTSCOPE_RUNS_ROOT"] = str(tmp / "runs")  # read by every engine call below (Settings.from_env)
        model, data, labels, batch, target = _inputs(name, tmp)
        run = tmp / "run"
        t0 = time.perf_counter()
        result = engine.compare(model, data, labels=labels, out_dir=run, batch_size=batch, provider="cpu")
        compare_s = time.perf_counter() - t0
        if target is None:
            target = result.final_output().snr_db + 10
        t0 = time.perf_counter()
        frame = engine.sensitivity(run)
        sens_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        found = engine.autofallback(run, engine.Target("snr_db", target))
        auto_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        swept = engine.sweep([model], data, data=data, labels=labels, out_dir=tmp / "sweep", batch_size=batch, provider="cpu")
        sweep_s = time.perf_counter() - t0
        return {"model": name, "units": len(frame), "samples": result.summary.samples, "compare_s": compare_s,
                "sensitivity_s": sens_s, "sensitivity_ratio": sens_s / compare_s, "autofallback_s": auto_s,
                "autofallback_ratio": auto_s / compare_s, "autofallback_target": target, "autofallback_set": list(found.fallback),
                "autofallback_met": found.met, "autofallback_achieved": found.achieved, "sweep_s": sweep_s,
                "sweep_ratio": sweep_s / compare_s, "sweep_best": swept.best().config.label if swept.best() else None,
                "sweep_rows": [(r.config.label, r.snr_db) for r in swept.rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["sample", "mobilenetv3"])
    ap.add_argument("--json", type=Path, default=OUT / "sensitivity.json")
    args = ap.parse_args()
    rows = []
    for name in args.models:
        r = measure(name)
        rows.append(r)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1, default=str))
        print(f"{name}: {r['units']} units, {r['samples']} samples; compare {r['compare_s']:.1f} s | sensitivity "
              f"{r['sensitivity_s']:.1f} s = {r['sensitivity_ratio']:.2f}x (target <= 3) | autofallback to snr_db="
              f"{r['autofallback_target']:.1f}: {r['autofallback_s']:.1f} s = {r['autofallback_ratio']:.2f}x (target <= 5), "
              f"{len(r['autofallback_set'])} node(s), met {r['autofallback_met']} ({r['autofallback_achieved']:.1f} dB) | "
              f"3-method sweep {r['sweep_s']:.1f} s = {r['sweep_ratio']:.2f}x (target <= 2), best {r['sweep_best']}", flush=True)


if __name__ == "__main__":
    main()
