"""Compare: settings (every `quantscope compare` option but the file paths), the "Run comparison" button, progress,
headline results."""

from __future__ import annotations

import streamlit as st

import engine
from app import state
from app.actions import busy, job_panel, run_comparison, show_error
from app.cached import model_op_types, readers
from app.summary_view import (
    amplifier_notes,
    batch_size_input,
    command_expander,
    every_output,
    execution_note,
    inputs_in_use,
    not_of_inputs_in_use,
    output_tiles,
)
from engine import Precision

st.title("Compare FP32 with its quantized build")
ss = st.session_state
inputs, blocked = inputs_in_use()

have = engine.available_providers()
status = ", ".join(f"{name} {'available' if ok else 'not available'}" for name, ok in have.items())
fallback_to = "ONNX Runtime CUDA" if have["cuda"] else "ONNX Runtime CPU"
st.info(f"Backends here: {status}. " + ("auto uses TensorRT." if have["tensorrt"] else f"TensorRT not installed — auto uses {fallback_to}."))

model_ops = model_op_types(inputs.model if inputs is not None else None)
options = list(engine.TRT_INT8_OP_TYPES) + [op for op in model_ops if op not in engine.TRT_INT8_OP_TYPES]
if preset := ss.pop(state.COMPARE_SETTINGS, None):  # a configuration opened on the Sweep page: before the controls draw
    ss.update({k: [op for op in v if op in options] if k == "cmp_ops" else v for k, v in preset.items()})
# defaults go into Session State, never as a widget's value: a configuration opened from the Sweep page sets these keys,
# and a widget given both logged Streamlit's "created with a default value but also had its value set" warning
for k, v in {"cmp_percentile": 99.999, "cmp_screen": 32, "cmp_ops": list(engine.TRT_INT8_OP_TYPES)}.items():
    ss.setdefault(k, v)
state.keep_choices_within("cmp_ops", options, list(engine.TRT_INT8_OP_TYPES))  # kept from another model's page
c1, c2, c3, c4, c5, c6 = st.columns(6)
methods = [m.value for m in engine.CalibrationMethod]
method = c1.selectbox("Calibration", methods, key="cmp_method")
percentile = c2.number_input("Percentile", min_value=90.0, max_value=100.0, step=0.001, format="%.4f",
                             key="cmp_percentile", disabled=method != engine.CalibrationMethod.PERCENTILE.value,
                             help="For percentile calibration: the range keeps this % of the calibration values (--percentile).")
batch = batch_size_input(c3, inputs, "cmp_batch")
provider = c4.selectbox("Provider", list(engine.PROVIDERS), key="cmp_provider")
screen = c5.number_input("Ranking samples", min_value=0, max_value=100_000, key="cmp_screen",
                         help="The culprit ranking measures each node's harm on at most this many samples (--screen-samples): "
                              "within its time budget it may measure every node on a few and only the strongest on more "
                              "(the Layers page says which). 0 ranks by the noise each node adds, without measuring.")
precision = c6.selectbox("Precision", [p.value for p in Precision], key="cmp_precision",
                         help="What quantized nodes compute in: INT8, or FP8 E4M3 Q/DQ (TensorRT runs FP8 on Hopper and later) "
                              "(--precision).")
slots = {"calib_method": c1.empty(), "percentile": c2.empty(), "batch": c3.empty(), "provider": c4.empty(),
         "screen_samples": c5.empty(), "precision": c6.empty()}
op_types = st.multiselect("Op types to quantize", options, key="cmp_ops",
                          help="TensorRT runs Conv, ConvTranspose, Gemm and MatMul in INT8 when their inputs carry Q/DQ "
                               "(--op-types); the other choices are this model's own op types.")
slots["op_types"] = st.empty()
if model_ops:
    absent = [op for op in engine.TRT_INT8_OP_TYPES if op not in model_ops]
    st.caption(f"This model's file has {', '.join(op for op in engine.TRT_INT8_OP_TYPES if op in model_ops) or 'none of them'}"
               + (f"; no {', '.join(absent)} (choosing them changes nothing, though pre-processing may fuse a MatMul and an "
                  "Add into a Gemm)." if absent else "."))
slots["images"] = st.empty()

if st.button("Run comparison", type="primary", disabled=busy() or blocked is not None or inputs is None,
             help=blocked or ("A job of this session is running." if busy() else None)):
    try:
        config = engine.QuantConfig(calibration=engine.CalibrationMethod.parse(method), op_types=tuple(op_types),
                                    percentile=float(percentile), precision=Precision.parse(precision))
    except engine.QuantScopeError as err:
        show_error(str(err), err.option or ("op_types" if not op_types else None), slots)
    else:
        run_comparison(inputs, config, int(batch), provider, int(screen))
job_panel("compare", slots)

result: engine.ComparisonResult | None = ss.get(state.RESULT)
if result is not None:
    s = result.summary
    not_of_inputs_in_use(result, on_compare=True)
    st.info(s.headline, icon=":material/troubleshoot:")  # a finding, good or bad: never the green of a success
    t = s.task
    shown = output_tiles(s)
    if t.reference_accuracy is not None:
        shown.append(("FP32 accuracy", f"{t.reference_accuracy:.2%}", None, None))
    if t.candidate_accuracy is not None:
        shown.append((f"{s.config.precision.label} accuracy", f"{t.candidate_accuracy:.2%}", f"{-t.accuracy_drop:+.2%}", None))
    if t.top1_agreement is not None:
        shown.append(("Top-1 agreement with FP32", f"{t.top1_agreement:.2%}", None, None))
    if t.text_agreement is not None:  # a CTC recogniser: does the text it reads change?
        shown.append(("Text read the same as FP32", f"{t.text_agreement:.2%}", None, None))
    for col, (label, value, delta, tip) in zip(st.columns(len(shown)), shown):
        col.metric(label, value, delta, help=tip)
    if len(s.outputs) > 1:
        st.caption(every_output(s))
    st.caption(execution_note(s.config.precision))
    try:
        others = readers(result)
    except Exception:  # noqa: BLE001 - only an explanation: without it the count still stands
        others = ()
    line = (f"{s.samples} samples in {s.batches} batch{'es' if s.batches != 1 else ''} on {s.backend}; {s.quantized_nodes} fallback candidate(s) in {s.config.precision.label} "
            f"(nodes of the quantized op types with a quantized input)" + (f", {len(s.fallback)} in {s.fallback_precision.value}" if s.fallback else "") + ".")
    if others:
        line += (f" {len(others)} other node(s) read a quantized tensor but run in float, so they are not candidates: "
                 + "; ".join(r.sentence for r in others[:3]) + ("; ..." if len(others) > 3 else "."))
    st.caption(line)
    for note in amplifier_notes(result):
        st.caption(f"Note: {note}; ticking it changes nothing.")
    for w in s.warnings:
        st.warning(w)
    command_expander(result)
    st.page_link("views/layers.py", label="Next: inspect the layers", icon=":material/arrow_forward:")
