"""MinMax calibration on a dynamic batch cuts batches into parts of MINMAX_MICRO samples (so ORT's calibrator never
holds a whole large batch of activations): the ranges must be exactly those of calibrating batch by batch."""

from __future__ import annotations

import json

from engine import compare
from engine.quantize.calibration import MINMAX_MICRO
from tests.engine.conftest import SAMPLES


def _ranges(run) -> dict:
    return json.loads((run / "calibration_cache.json").read_text())["data"]


def test_minmax_ranges_do_not_depend_on_how_batches_are_cut(tmp_path):
    model, calib = SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz"
    big, small = 25, MINMAX_MICRO  # 25 is cut into 8+8+8+1 parts; 8 runs as it is
    compare(model, calib, out_dir=tmp_path / "big", batch_size=big, provider="cpu", screen_samples=0)
    compare(model, calib, out_dir=tmp_path / "small", batch_size=small, provider="cpu", screen_samples=0)
    a, b = _ranges(tmp_path / "big"), _ranges(tmp_path / "small")
    assert a and a == b


def test_the_collect_plan_keeps_a_large_model_within_the_budget():
    from engine.quantize.calibration import BATCHES_PER_CHUNK, CollectPlan, collect_plan
    from engine.quantize.config import CalibrationMethod as M

    mb = 2**20
    # PP-OCRv4's detector at 640 x 640: 650 MB of activations a sample, a 1024 MB budget, batch 25 (3.7 GB with MinMax's
    # 8-sample parts, 4.3 GB with entropy's whole batches, before)
    assert collect_plan(M.MINMAX, 25, True, 650 * mb, 1024 * mb) == CollectPlan(1, 2)
    assert collect_plan(M.ENTROPY, 25, True, 650 * mb, 1024 * mb) == CollectPlan(1, 1)
    assert collect_plan(None, 25, True, 650 * mb, 1024 * mb) == CollectPlan(1, 1)  # a sweep's shared pass
    # a small model keeps the usual cut: MinMax in parts of 8, histograms four whole batches a collect
    assert collect_plan(M.MINMAX, 25, True, 1 * mb, 1024 * mb) == CollectPlan(MINMAX_MICRO, 2)
    assert collect_plan(M.PERCENTILE, 25, True, 1 * mb, 1024 * mb) == CollectPlan(None, BATCHES_PER_CHUNK)
    # 30 MB a sample (MobileNetV3): four batches of 25 would hold 3 GB; one is 0.75 GB
    assert collect_plan(M.ENTROPY, 25, True, 30 * mb, 1024 * mb) == CollectPlan(None, 1)
    # a fixed batch is never cut, however large; unknown sizes change nothing
    assert collect_plan(M.ENTROPY, 4, False, 650 * mb, 1024 * mb) == CollectPlan(None, 1)
    assert collect_plan(M.MINMAX, 25, False, 650 * mb, 1024 * mb) == CollectPlan(None, BATCHES_PER_CHUNK)
    assert collect_plan(M.ENTROPY, 25, True, None, 1024 * mb) == CollectPlan(None, BATCHES_PER_CHUNK)


def test_a_histogram_calibration_cut_to_the_budget_is_what_a_sweep_computes_and_is_kept_apart(tmp_path):
    import dataclasses

    import onnx

    from engine.compare.memory_plan import activation_bytes_per_sample
    from engine.data.loading import load_data
    from engine.model.info import model_info
    from engine.quantize.calibration import CalibrationSpec, calibrate_many, collect_plan
    from engine.quantize.config import CalibrationMethod, QuantConfig
    from engine.settings import Settings

    model, calib = SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz"
    entropy = QuantConfig(calibration=CalibrationMethod.ENTROPY)
    kw = {"batch_size": 25, "provider": "cpu", "screen_samples": 0, "config": entropy}
    compare(model, calib, out_dir=tmp_path / "whole", **kw)
    reference = onnx.load(tmp_path / "whole" / "reference.onnx")  # the pre-processed graph calibration runs
    per_sample = activation_bytes_per_sample(reference, {"input": (1, 32, 32)})
    assert per_sample == sum(4 * n for n in _element_counts(reference))  # every node output, float32
    budget = 3 * per_sample  # three samples a collect
    settings = dataclasses.replace(Settings.from_env(), memory_bytes=budget)
    compare(model, calib, out_dir=tmp_path / "cut", settings=settings, **kw)
    stored = sorted((settings.runs_root / "calibration-cache").glob("*.json"))
    assert len({p.name.split(".")[0] for p in stored}) == 2  # two keys: the cut is part of what decides the ranges
    plan = collect_plan(CalibrationMethod.ENTROPY, 25, True, per_sample, budget)
    assert plan.part == 3 and plan.runs == 1
    source = load_data(calib, model_info(reference))
    swept = calibrate_many(tmp_path / "cut" / "reference.onnx", source, entropy.op_types, [CalibrationSpec(CalibrationMethod.ENTROPY)],
                           25, plan=plan)
    from onnxruntime.quantization.calibrate import save_tensors_data

    (tmp_path / "swept").mkdir()
    save_tensors_data(next(iter(swept.values())), tmp_path / "swept" / "calibration_cache.json")
    bounds = lambda ranges: {k: (v["lowest"], v["highest"]) for k, v in ranges.items()}  # noqa: E731 - what Q/DQ scales use
    got, want = bounds(_ranges(tmp_path / "cut")), bounds(_ranges(tmp_path / "swept"))
    assert got and got == want


def _element_counts(model) -> list[int]:
    import numpy as np
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    shapes.update({v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim] for v in inferred.graph.output})
    return [int(np.prod(shapes[o])) for n in model.graph.node for o in n.output if o in shapes]


def test_calibration_progress_counts_its_runs(tmp_path):
    """One batch of 16 pages cut into 16 runs said 'calibration batch 1/1' throughout, its bar full from the start."""
    import onnx

    from engine.data.loading import load_data
    from engine.model.info import model_info
    from engine.quantize.calibration import CollectPlan, calibrate
    from engine.quantize.config import QuantConfig

    model, calib = SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz"
    source = load_data(calib, model_info(onnx.load(model)))
    assert source.num_samples == 128
    said = []
    calibrate(model, source, QuantConfig(), tmp_path / "c.json", 50, said.append, dynamic_batch=True, plan=CollectPlan(20, 2))
    runs = [(ev.done, ev.total, ev.message) for ev in said if ev.message.startswith("calibration batch")]
    # batches of 50, 50 and 28, in runs of 20: 3 + 3 + 2, each said before it runs
    assert [(d, t) for d, t, _ in runs] == [(k, 8) for k in range(8)]
    assert [m for _, _, m in runs][:4] == ["calibration batch 1/3, samples 1-20 of 50", "calibration batch 1/3, samples 21-40 of 50",
                                          "calibration batch 1/3, samples 41-50 of 50", "calibration batch 2/3, samples 1-20 of 50"]
    assert (said[-1].done, said[-1].total) == (8, 8) and (tmp_path / "c.json").is_file()


def test_a_full_chunk_is_handed_over_before_the_next_run_is_drawn():
    """A sweep's calibration said run k+1 while run k computed, its bar full during the last run: chunks read ahead."""
    from engine.quantize.calibration import _chunks

    drawn = []

    def runs():
        for k in range(5):
            drawn.append(k)
            yield {"x": __import__("numpy").zeros((1 if k < 4 else 2, 3))}

    seen = []
    for chunk in _chunks(runs(), 2):
        seen.append((len(chunk), list(drawn)))
    # two runs a chunk, handed over as the second is drawn; the fifth, of another shape, alone
    assert seen == [(2, [0, 1]), (2, [0, 1, 2, 3]), (1, [0, 1, 2, 3, 4])]
