"""Pages on models whose shape the bundled samples do not have: a detector head mixing scales, several outputs, a
fixed batch dimension (each first met on a real model: YOLOv8n, silero-vad, ddddocr's recogniser)."""

from __future__ import annotations

from app import state
from tests.app.test_pages import click, fresh


def test_a_detector_heads_scores_get_their_own_snr_before_and_after_a_rebuild(tmp_path):
    """YOLOv8n's final-output SNR went 26.5 -> 34.8 dB on a rebuild while its class scores went 10.4 -> 17.0 dB, shown
    nowhere: the scores' own SNR is stated on Compare and set before/after on Rebuild."""
    from app.inputs import Inputs
    from tests.engine.test_output_channels import _detector

    _detector(tmp_path / "det.onnx")
    at = fresh()
    at.session_state[state.INPUTS] = Inputs("det.onnx", str(tmp_path / "det.onnx"), str(tmp_path / "det.npz"))
    at.switch_page("views/compare.py").run()
    at.number_input(key="cmp_screen").set_value(0).run()
    click(at, "Run comparison")
    first = at.session_state[state.RESULT].summary.small_channels("y")
    assert first.hides and any(w.value.startswith("Output 'y' mixes channels of very different scales") for w in at.warning)
    at.switch_page("views/layers.py").run()
    at.session_state[state.FALLBACK] = {"conv"}  # the only quantized node
    at.switch_page("views/rebuild.py").run()
    click(at, "Rebuild with fallback")
    after = at.session_state[state.RESULT].summary.small_channels("y")
    shown = {m.label: m for m in at.metric}["SNR of the small-scale channels (y, channels 4-7)"]
    assert shown.value == f"{after.small_snr_db:.2f} dB" and shown.delta == f"{after.small_snr_db - first.small_snr_db:+.2f} dB"
    assert after.small_snr_db > first.small_snr_db + 10  # the conv in fallback: the scores nearly exact


def test_a_model_with_several_outputs_names_the_one_its_figures_are_of(tmp_path):
    """silero-vad's sequence export (speech_probs and its state): "Final-output SNR" showed the first output's figure as
    if it were the model's, beside a headline that counts every output."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from app.inputs import Inputs
    from tests.engine.conftest import tiny_model

    m = tiny_model()
    m.graph.output.append(helper.make_tensor_value_info("f", TensorProto.FLOAT, ["n", 4]))  # the pooled features too
    onnx.save(m, tmp_path / "two.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(2).standard_normal((10, 2, 8, 8)).astype(np.float32))
    at = fresh()
    at.session_state[state.INPUTS] = Inputs("two.onnx", str(tmp_path / "two.onnx"), str(tmp_path / "d.npz"))
    at.switch_page("views/compare.py").run()
    at.number_input(key="cmp_screen").set_value(0).run()
    click(at, "Run comparison")
    s = at.session_state[state.RESULT].summary
    assert list(s.outputs) == ["y", "f"]
    tiles = {m.label: m for m in at.metric}
    assert list(tiles)[:3] == ["SNR, all 2 outputs", "Final-output SNR, output 1 of 2", "Final-output cosine, output 1 of 2"]
    # the first tile is the headline's and the ranking's figure: both outputs, each against its own signal
    ratios = [10 ** (-s.outputs[o].snr_db / 10) for o in ("y", "f")]
    assert tiles["SNR, all 2 outputs"].value == f"{-10 * np.log10(np.mean(ratios)):.2f} dB"
    assert tiles["Final-output SNR, output 1 of 2"].value == f"{s.outputs['y'].snr_db:.2f} dB"
    every = next(c.value for c in at.caption if c.value.startswith("Every output: "))
    assert f"'f' {s.outputs['f'].snr_db:.2f} dB SNR" in every and f"'y' {s.outputs['y'].snr_db:.2f} dB SNR" in every
    assert any(c.value.startswith("Accuracy figures are of this Q/DQ model as the comparison's backend ran it") for c in at.caption)


def test_a_fixed_batch_is_shown_as_fixed_before_the_run(tmp_path):
    """ddddocr's recogniser fixes its batch at 1: the page offered 25 and said afterwards that batches of 1 were used."""
    import numpy as np
    import onnx

    from app.inputs import Inputs
    from tests.engine.conftest import tiny_model

    m = tiny_model()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(m, tmp_path / "fixed.onnx")
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 2, 8, 8), np.float32))
    at = fresh()
    at.session_state[state.INPUTS] = Inputs("fixed.onnx", str(tmp_path / "fixed.onnx"), str(tmp_path / "d.npz"))
    at.switch_page("views/compare.py").run()
    box = next(n for n in at.number_input if n.label == "Batch size")
    assert (box.value, box.disabled) == (4, True) and "fixes its batch dimension at 4" in box.help
    at.switch_page("views/sweep.py").run()  # a sweep recorded 'Batch 25' for a model that ran batches of 1
    box = next(n for n in at.number_input if n.label == "Batch size")
    assert (box.value, box.disabled) == (4, True)
