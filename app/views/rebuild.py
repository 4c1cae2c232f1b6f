"""Rebuild: re-emit with the ticked nodes in FP16 (no recalibration), before/after, downloads."""

from __future__ import annotations

import json

import streamlit as st

from app import state
from app.actions import busy, job_panel, run_rebuild
from app.plots import before_after_figure
from app.report import build_report, cli_command

st.title("Rebuild with FP16 fallback")
result = st.session_state.get(state.RESULT)
if result is None:
    st.info("No comparison yet: run one on the Compare page.")
    st.stop()
ticks = state.fallback()
st.write(f"Ticked for FP16: **{', '.join(sorted(ticks)) or 'none'}** (change them on the Layers page).")
if st.button("Rebuild with fallback", type="primary", disabled=busy()):
    run_rebuild(ticks)
job_panel("rebuild")

result = st.session_state[state.RESULT]
before = st.session_state.get(state.BEFORE)
s = result.summary
out = result.final_output()
if before is not None:
    b_out = before.final_output()
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Final-output SNR", f"{out.snr_db:.2f} dB", f"{out.snr_db - b_out.snr_db:+.2f} dB", help="after vs before")
    c2.metric("Final-output cosine", f"{out.cosine:.5f}", f"{out.cosine - b_out.cosine:+.5f}")
    if s.task.get("candidate_accuracy") is not None:
        c3.metric("INT8 accuracy", f"{s.task['candidate_accuracy']:.2%}",
                  f"{s.task['candidate_accuracy'] - before.summary.task['candidate_accuracy']:+.2%}")
    elif s.task.get("top1_agreement") is not None:
        c3.metric("Top-1 agreement", f"{s.task['top1_agreement']:.2%}",
                  f"{s.task['top1_agreement'] - before.summary.task['top1_agreement']:+.2%}")
    c4.metric("Nodes INT8 / FP16", f"{s.quantized_nodes} / {len(s.fallback)}")
    st.plotly_chart(before_after_figure(before.layers, result.layers), key="before_after", width="stretch")
else:
    st.caption(f"Current build: final-output SNR {out.snr_db:.2f} dB, {s.quantized_nodes} nodes INT8, {len(s.fallback)} in fallback.")

inputs = st.session_state.get(state.INPUTS, {})
command = cli_command(inputs.get("model", "model.onnx"), inputs.get("calib", "calib.npz"), inputs.get("data"), inputs.get("labels"),
                      s.config, s.batch_size, "auto", list(s.fallback))
summary = json.loads((result.files / "summary.json").read_text())
before_summary = json.loads(json.dumps(before.summary.to_dict())) if before is not None else None
d1, d2, d3, d4 = st.columns(4)
d1.download_button("Rebuilt Q/DQ model (.onnx)", (result.files / "candidate.onnx").read_bytes(), "candidate.onnx")
d2.download_button("layers.csv", (result.files / "layers.csv").read_bytes(), "layers.csv")
d3.download_button("summary.json", (result.files / "summary.json").read_bytes(), "summary.json")
d4.download_button("HTML report", build_report(result.layers, summary, before.layers if before is not None else None,
                                               before_summary, command), "quantscope_report.html", mime="text/html")
st.code(command, language="bash")
