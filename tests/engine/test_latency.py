"""quantscope bench: every build timed, with its accuracy, on the CPU provider."""

from __future__ import annotations

import json
import math

from engine import compare, measure_latency
from engine.cli.main import main


def test_latency_of_every_build(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    first = compare(tiny / "tiny.onnx", tiny / "data.npz", out_dir=run, batch_size=5, provider="cpu")
    top = first.summary.culprits[0].node
    assert main(["rebuild", str(run), "--fallback", top, "--quiet"]) == 0
    events = []
    rows = {r.build.split(" ")[0]: r for r in measure_latency(run, runs=5, warmup=1, progress=events.append)}
    assert set(rows) == {"fp32", "fp16", "int8", "mixed"}
    # the build it cannot time is no step: the count ran 1/4, 3/4 and halved each step's apparent time (YOLOv8n trial)
    assert [(e.done, e.total, e.message) for e in events] == [
        (0, 3, "timing fp32 (1/3)"), (1, 3, "timing int8 (2/3)"), (2, 3, "timing mixed (1 in fp16) (3/3)"), (3, 3, "done")]
    assert rows["fp16"].median_ms is None and "no FP16 kernels" in rows["fp16"].note
    for name in ("fp32", "int8", "mixed"):
        r = rows[name]
        assert 0 < r.median_ms <= r.p90_ms and r.runs == 5 and r.batch == 5
    assert rows["fp32"].snr_db == math.inf
    # accuracy of each build is the output-only probe: the INT8 build equals the first comparison's final SNR
    assert abs(rows["int8"].snr_db - first.final_output().snr_db) < 1e-3
    assert rows["mixed"].fallback_nodes == 1
    doc = json.loads((run / "latency.json").read_text())
    assert doc["backend"] == "onnxruntime-cpu" and len(doc["builds"]) == 4
    assert main(["bench", str(run), "--runs", "3", "--warmup", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "fp32" in out and "int8" in out and "batch 5, 3 timed runs" in out


def test_a_quantized_build_slower_than_fp32_says_why():
    from engine.latency import BuildLatency, explain_slower_than_fp32

    rows = [BuildLatency("fp32", 81.0, 90.0, 5, 25, math.inf, 0), BuildLatency("fp16", None, None, 0, 25, None, 0, note="not measured"),
            BuildLatency("int8", 361.0, 400.0, 5, 25, 11.0, 0), BuildLatency("mixed (3 in fp16)", 70.0, 75.0, 5, 25, 16.0, 3)]
    out = {r.build: r.note for r in explain_slower_than_fp32(rows, "onnxruntime-cpu")}
    assert out["int8"].startswith("slower than FP32 on onnxruntime-cpu: ") and "TensorRT" in out["int8"]
    assert out["fp32"] == "" and out["fp16"] == "not measured" and out["mixed (3 in fp16)"] == ""


def test_a_second_slower_build_points_at_the_first_ones_reason():
    """YOLOv8n trial: the INT8 and mixed rows carried the same long sentence twice."""
    from engine.latency import BuildLatency, explain_slower_than_fp32

    rows = [BuildLatency("fp32", 428.0, 450.0, 5, 25, math.inf, 0), BuildLatency("int8", 587.0, 600.0, 5, 25, 26.5, 0),
            BuildLatency("mixed (3 in fp16)", 703.0, 720.0, 5, 25, 34.8, 3)]
    out = {r.build: r.note for r in explain_slower_than_fp32(rows, "onnxruntime-cpu")}
    assert out["int8"].startswith("slower than FP32 on onnxruntime-cpu: this runtime quantizes")
    assert out["mixed (3 in fp16)"] == "slower than FP32 on onnxruntime-cpu, for the reason above"
