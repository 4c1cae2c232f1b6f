"""Benchmark: sensitivity over every quantizable node of the sample model with 32 samples (target <= 60 s on
2 cores), and the probe counts of automatic fallback on the outlier model.

    python bench/bench_sensitivity.py"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402


def main() -> None:
    s = ROOT / "sample_models"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "eval32.npz"
        labels = Path(tmp) / "labels32.npy"
        np.savez(data, input=np.load(s / "digits_eval.npz")["input"][:32])
        np.save(labels, np.load(s / "digits_eval_labels.npy")[:32])
        run = Path(tmp) / "run"
        engine.compare(s / "resnet_digits_outlier.onnx", s / "digits_calib.npz", data=data, labels=labels, out_dir=run,
                       batch_size=8, provider="cpu")
        t0 = time.perf_counter()
        frame = engine.sensitivity(run)
        sens_s = time.perf_counter() - t0
        print(f"sensitivity: {len(frame)} quantizable nodes x 2 views + baseline = {2 * len(frame) + 1} probes, 32 samples: "
              f"{sens_s:.1f} s (target <= 60 s)")
        clean = Path(tmp) / "clean"
        target = engine.compare(s / "resnet_digits.onnx", s / "digits_calib.npz", data=data, out_dir=clean, batch_size=8,
                                provider="cpu").final_output().snr_db - 1
        for strategy in ("greedy", "bisect"):
            t0 = time.perf_counter()
            res = engine.autofallback(run, engine.Target("snr_db", target), strategy=strategy, apply=False)
            r = res.strategies.get(strategy)
            print(f"autofallback {strategy}: target snr_db={target:.2f}: {res.message} probes={r.probes if r else res.extra['probes']} "
                  f"(plus 2 shared: all-INT8 and all-fallback), {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
