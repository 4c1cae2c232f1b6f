"""Compare: settings, the "Run comparison" button, progress, headline results."""

from __future__ import annotations

import streamlit as st

import engine
from app import state
from app.actions import busy, job_panel, run_comparison, sample_inputs

st.title("Compare FP32 with INT8")
inputs = st.session_state.get(state.INPUTS) or sample_inputs("resnet_digits_outlier")
st.session_state[state.INPUTS] = inputs
st.caption(f"Model: **{inputs['name']}**")

have = engine.available_providers()
status = ", ".join(f"{name} {'available' if ok else 'not available'}" for name, ok in have.items())
fallback_to = "ONNX Runtime CUDA" if have["cuda"] else "ONNX Runtime CPU"
st.info(f"Backends here: {status}. " + ("auto uses TensorRT." if have["tensorrt"] else f"TensorRT not installed — auto uses {fallback_to}."))

c1, c2, c3, c4 = st.columns(4)
method = c1.selectbox("Calibration", [m.value for m in engine.CalibrationMethod], key="cmp_method")
batch = c2.number_input("Batch size", min_value=1, max_value=512, value=25, key="cmp_batch")
provider = c3.selectbox("Provider", list(engine.PROVIDERS), key="cmp_provider")
op_types = c4.multiselect("Op types to quantize", ["Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul"],
                          default=list(engine.TRT_INT8_OP_TYPES), key="cmp_ops")

if st.button("Run comparison", type="primary", disabled=busy()):
    try:
        config = engine.QuantConfig(calibration=engine.CalibrationMethod.parse(method), op_types=tuple(op_types))
    except engine.QuantScopeError as err:
        st.error(str(err))
    else:
        run_comparison(inputs, config, int(batch), provider)
job_panel("compare")

result: engine.ComparisonResult | None = st.session_state.get(state.RESULT)
if result is not None:
    s = result.summary
    st.success(s.headline)
    out = result.final_output()
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Final-output cosine", f"{out.cosine:.5f}")
    c2.metric("Final-output SNR", f"{out.snr_db:.2f} dB")
    if s.task.get("top1_agreement") is not None:
        c3.metric("Top-1 agreement", f"{s.task['top1_agreement']:.2%}")
    if s.task.get("candidate_accuracy") is not None:
        c4.metric("INT8 accuracy", f"{s.task['candidate_accuracy']:.2%}", f"{-s.task['accuracy_drop']:+.2%}")
    st.caption(f"{s.samples} samples in {s.batches} batches on {s.backend}; {s.quantized_nodes} nodes in INT8.")
    for w in s.warnings:
        st.warning(w)
    st.page_link("views/layers.py", label="Next: inspect the layers", icon=":material/arrow_forward:")
