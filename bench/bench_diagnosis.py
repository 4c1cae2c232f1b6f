"""Is the culprit ranking right? Per model: the ranking `compare` gives (measured harm on its screening subset) against
both isolated views measured on all the evaluation data, and the old introduced-noise ranking for contrast.

    python bench/bench_diagnosis.py [MODEL ...] [--screen 32] [--samples N] [--json bench/out/diagnosis.json]

MODEL: the bundled `sample` and the real third-party models of bench/real_models.py (default: all of them).
For every model it prints:
  headline in top 3   the ranking's first unit is in the isolated top 3 of either view
                      (only this unit in INT8: lowest final SNR; falling back just this unit: highest gain)
  top-3 recovery      final-output dB gained by falling back the ranking's top 3, divided by the gain of the better
                      isolated view's top 3 (what "Tick the top-k culprits" gets a user, against the best isolated pick)
  Spearman            rank correlation with each isolated view over all units (for information: deep in the list,
                      where units barely matter, order is noise)
  old                 the same figures for the introduced-noise ranking QuantScope used before (its headline could be
                      a node that is not quantized; its top 3 counted only quantized nodes)
  cost                the ranking stage's seconds against the rest of the compare (timings['rank'] vs the others),
                      and the probe plan its budget allowed; each model gets a fresh runs root, so the rest is a
                      user's first compare of it (calibration and pre-processing not yet in the runs root's stores)
Final-output figures are all float outputs together, each relative to its own signal power (outputs_snr_db).
Isolated views run on the gated candidate over all the samples (bit-exact to emission for FP32 fallback)."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import compare  # noqa: E402
from engine.diagnose.run_probe import open_probe  # noqa: E402
from engine.settings import Settings  # noqa: E402

OUT = ROOT / "bench" / "out"


def _spearman(a: list[float], b: list[float]) -> float:
    if len(a) < 3:
        return math.nan
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _model(name: str, samples: int | None):
    if name == "sample":
        s = ROOT / "sample_models"
        return s / "resnet_digits_outlier.onnx", s / "digits_eval.npz", s / "digits_eval_labels.npy", 25, "bundled outlier sample"
    from bench.real_models import get

    m = get(name, samples)
    return m.path, m.data, m.labels, m.batch, m.description


def measure(name: str, screen: int, samples: int | None, work: Path) -> dict:
    path, data, labels, batch, description = _model(name, samples)
    out = work / name
    for old in (out, work / f"{name}-runs"):  # an earlier bench run's folder and stores: this is a first compare
        shutil.rmtree(old, ignore_errors=True)
    os.environ["QUANTSCOPE_RUNS_ROOT"] = str(work / f"{name}-runs")
    settings = Settings.from_env()
    t0 = time.perf_counter()
    result = compare(path, data, out_dir=out, labels=labels, batch_size=batch, provider="cpu", screen_samples=screen,
                     settings=settings)
    wall = time.perf_counter() - t0
    s = result.summary
    timings = s.timings
    rank_s = timings.get("rank", 0.0)
    rest = sum(v for k, v in timings.items() if k in ("load", "preprocess", "calibrate", "quantize", "compare"))
    ranking = [c.node for c in s.culprits]

    _, _, probe = open_probe(out, "cpu", samples=None)  # isolated views on all the evaluation data
    with probe:
        units = [u[0] for u in probe.units]
        base = probe.measure(()).outputs_snr_db
        alone = {u: probe.measure_only((u,)).outputs_snr_db for u in units}
        gain = {u: probe.measure((u,)).outputs_snr_db - base for u in units}
        only_top = sorted(units, key=lambda u: alone[u])[:3]
        gain_top = sorted(units, key=lambda u: -gain[u])[:3]

        def gain_of(nodes) -> float:
            return probe.measure(nodes).outputs_snr_db - base

        best = max(gain_of(only_top), gain_of(gain_top))
        ours = gain_of(ranking[:3])
        layers = result.layers.sort_values("introduced_db", ascending=False).drop_duplicates("node")
        old_head = layers.iloc[0]["node"]
        old_top3 = list(layers[layers["quantized"]]["node"][:3])
        old = gain_of(old_top3)
        probes = probe.probes
    top3 = set(only_top) | set(gain_top)
    return {
        "model": name, "description": description, "samples": s.samples, "units": len(units), "screen": s.ranking.samples,
        "all_int8_snr_db": base, "headline": ranking[0] if ranking else None,
        "headline_in_top3": bool(ranking) and ranking[0] in top3,
        "recovery": ours / best if best > 0 else math.nan, "gain_top3_db": ours, "best_isolated_top3_gain_db": best,
        "spearman_only": _spearman([alone[u] for u in ranking], list(range(len(ranking)))) if ranking else math.nan,
        "spearman_gain": _spearman([gain[u] for u in ranking], [-i for i in range(len(ranking))]) if ranking else math.nan,
        "old_headline": old_head, "old_headline_quantized": old_head in units,
        "old_headline_in_top3": old_head in top3, "old_recovery": old / best if best > 0 else math.nan, "old_gain_top3_db": old,
        "rank_s": rank_s, "rest_s": rest, "rank_over_rest": rank_s / rest if rest else math.nan, "compare_wall_s": wall,
        "view": s.ranking.view, "plan": s.ranking.plan, "ranking_probes": s.ranking.probes, "top_set_gain_db_screen": s.ranking.top_set_gain_db,
        "isolated_probes": probes, "isolated_only_top3": only_top, "isolated_gain_top3": gain_top, "ranking_top3": ranking[:3],
    }


def main(argv: list[str] | None = None) -> int:
    from bench.real_models import NAMES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", default=["sample", *NAMES])
    p.add_argument("--screen", type=int, default=32, help="the ranking's screening subset (compare's default: 32)")
    p.add_argument("--samples", type=int, default=None, help="evaluation samples per real model (default: each model's own)")
    p.add_argument("--json", type=Path, default=OUT / "diagnosis.json")
    args = p.parse_args(argv)
    work = OUT / "diagnosis_runs"
    rows = []
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        row = measure(name, args.screen, args.samples, work)
        rows.append(row)
        args.json.write_text(json.dumps(rows, indent=1, default=str))  # kept as it goes: a long run can be read halfway
        print(f"{name}: headline {row['headline']} in isolated top 3: {row['headline_in_top3']}; top-3 recovery "
              f"{row['recovery']:.2f} ({row['gain_top3_db']:.1f} of {row['best_isolated_top3_gain_db']:.1f} dB); "
              f"old: {row['old_headline']} ({row['old_headline_in_top3']}), recovery {row['old_recovery']:.2f}; "
              f"rank {row['rank_s']:.1f} s vs rest {row['rest_s']:.1f} s ({row['rank_over_rest']:.2f}x)", flush=True)
    print()
    print("| model | units | samples (screen) | headline | in isolated top 3 | top-3 recovery (view) | Spearman alone / gain | "
          "old headline (in top 3) | old recovery | rank / rest of compare | rank probes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['units']} | {r['samples']} ({r['screen']}) | {r['headline']} | {'yes' if r['headline_in_top3'] else 'NO'} "
              f"| {r['recovery']:.2f} ({r['view']}) | {r['spearman_only']:.2f} / {r['spearman_gain']:.2f} | {r['old_headline']} "
              f"({'yes' if r['old_headline_in_top3'] else 'no'}) | {r['old_recovery']:.2f} | {r['rank_s']:.1f} s / {r['rest_s']:.1f} s "
              f"= {r['rank_over_rest']:.2f} | {r['plan']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
