"""Rebuild: re-emit with the ticked nodes out of INT8, the custom ranges and the fallback precision (no recalibration),
before/after, downloads and the equivalent command."""

from __future__ import annotations

import streamlit as st

import engine
from app import cached, state
from app.actions import busy, job_panel, run_rebuild
from app.plots import before_after_figure
from app.report import PLOTLY_JS_NAME, build_report, plotly_js_size
from app.summary_view import (
    change_text,
    command_expander,
    delta_color,
    every_output,
    execution_note,
    not_of_inputs_in_use,
    output_tiles,
)

st.title("Rebuild with fallback")
ss = st.session_state
result: engine.ComparisonResult | None = ss.get(state.RESULT)
if result is None:
    st.info("No comparison yet: run one on the Compare page.")
    st.stop()
not_of_inputs_in_use(result, buttons=("Rebuild with fallback",))
s = result.summary
ticks = state.fallback()
ranges: dict = ss.setdefault(state.RANGES, {})

precisions = [p.value for p in engine.FallbackPrecision]
ss.setdefault(state.PRECISION, s.fallback_precision.value)
ss["rb_precision"] = ss[state.PRECISION]


def _precision_changed() -> None:
    ss[state.PRECISION] = ss["rb_precision"]


def _drop_range(tensor: str) -> None:
    ss[state.RANGES].pop(tensor, None)


current = set(s.fallback)
added, removed = engine.in_name_order(ticks - current), engine.in_name_order(current - ticks)
st.markdown(f"Ticked for fallback: **{', '.join(engine.in_name_order(ticks)) or 'none'}** (change them on the Layers page)"
            + (f"; adds {', '.join(added)}" if added else "") + (f"; removes {', '.join(removed)}" if removed else "") + ".")
slots = {"fallback": st.empty()}
c1, c2 = st.columns([1, 3])
c1.selectbox("Fallback precision", precisions, key="rb_precision", on_change=_precision_changed,
             help="fp16 keeps the ticked nodes in half precision with casts at their boundaries; fp32 keeps them as they "
                  "were (--fallback-precision).")
slots["fallback_precision"] = c1.empty()
with c2:
    if ranges:
        st.markdown("Custom ranges (`--range`; edit them in a node's tensor view on the Layers page):")
        for tensor, (lo, hi) in sorted(ranges.items()):
            r1, r2 = st.columns([4, 1], vertical_alignment="center")
            r1.code(f"{tensor}={lo:g},{hi:g}", language=None)
            r2.button("Remove", key=f"rb_drop_{tensor}", on_click=_drop_range, args=(tensor,))
    else:
        st.caption("No custom ranges: every tensor keeps its calibrated range (set one in a node's tensor view on the Layers page).")
    slots["ranges"] = st.empty()

wanted = (frozenset(ticks), frozenset((t, float(lo), float(hi)) for t, (lo, hi) in ranges.items()), ss[state.PRECISION])
have = (frozenset(s.fallback), frozenset((r.tensor, float(r.min), float(r.max)) for r in s.config.ranges), s.fallback_precision.value)
unchanged = wanted == have
built = bool(s.fallback or s.config.ranges)  # after a rebuild the same sentence read as if nothing had happened
reason = (("This build already has these ticks, ranges and precision: tick or untick nodes on the Layers page to rebuild "
           "again." if built else "Nothing to rebuild yet: tick nodes for fallback on the Layers page, or set a range, "
           "first.") if unchanged
          else "A job of this session is running." if busy() else None)
if st.button("Rebuild with fallback", type="primary", disabled=busy() or unchanged, help=None if unchanged and not busy() else reason):
    run_rebuild(ticks, tuple(engine.RangeOverride(t, lo, hi) for t, (lo, hi) in sorted(ranges.items())),
                engine.FallbackPrecision.parse(ss[state.PRECISION]))
if unchanged and not busy():
    st.caption(reason)  # written out under the button, so not its tooltip as well (it showed twice)
job_panel("rebuild", slots)

result = ss[state.RESULT]
before: engine.ComparisonResult | None = ss.get(state.BEFORE)
s = result.summary
out = result.final_output()
if before is not None:
    b = before.summary
    changes = []
    if set(s.fallback) != set(b.fallback):
        changes.append(f"fallback {', '.join(b.fallback) or 'none'} → {', '.join(s.fallback) or 'none'}")
    if s.config.ranges != b.config.ranges:
        changes.append(f"ranges {', '.join(map(str, b.config.ranges)) or 'none'} → {', '.join(map(str, s.config.ranges)) or 'none'}")
    if s.fallback_precision != b.fallback_precision:
        changes.append(f"precision {b.fallback_precision.value} → {s.fallback_precision.value}")
    st.caption("This rebuild changed: " + ("; ".join(changes) or "nothing") + ".")
    shown = output_tiles(s, b)
    if s.task.candidate_accuracy is not None:
        shown.append((f"{s.config.precision.label} build accuracy", f"{s.task.candidate_accuracy:.2%}",
                      f"{s.task.candidate_accuracy - b.task.candidate_accuracy:+.2%}", f"FP32: {s.task.reference_accuracy:.2%}"))
    elif s.task.top1_agreement is not None:
        shown.append(("Top-1 agreement", f"{s.task.top1_agreement:.2%}", f"{s.task.top1_agreement - b.task.top1_agreement:+.2%}", None))
    elif s.task.text_agreement is not None:
        shown.append(("Text read the same as FP32", f"{s.task.text_agreement:.2%}",
                      f"{s.task.text_agreement - b.task.text_agreement:+.2%}" if b.task.text_agreement is not None else None,
                      f"Samples whose text, decoded greedily from the CTC scores of output '{s.task.output}', is what "
                      "FP32 reads."))
    # a detector's class scores, which the final-output SNR hides under its box coordinates (YOLOv8n: 26.5 dB whole,
    # 10.4 dB for the scores): their own before and after
    for split, was in ((c, b.small_channels(c.output)) for c in s.channel_splits):
        if was is not None and was.small == split.small and (split.hides or was.hides):
            shown.append((f"SNR of the small-scale channels ({split.label})", f"{engine.format_metric('snr_db', split.small_snr_db)} dB",
                          change_text(split.small_snr_db, was.small_snr_db, " dB", 2),
                          "Channels under 1% of the largest channel's scale, such as a detector's class scores beside its box "
                          "coordinates: the final-output SNR is set by the large ones."))
    shown.append((f"Nodes {s.config.precision.label} / {s.fallback_precision.value}", f"{s.quantized_nodes} / {len(s.fallback)}", None, None))
    for col, (label, value, delta, tip) in zip(st.columns(len(shown)), shown):
        col.metric(label, value, delta, help=tip, delta_color=delta_color(delta))
    if len(s.outputs) > 1:
        st.caption(every_output(s, b))
    st.caption(execution_note(s.config.precision))
    st.plotly_chart(before_after_figure(before.layers, result.layers, changed=set(before.summary.fallback) ^ set(s.fallback)), key="before_after", width="stretch")
else:
    st.caption(f"Current build: final-output SNR {engine.format_metric('snr_db', out.snr_db)} dB, {s.quantized_nodes} nodes in "
               f"{s.config.precision.label}, {len(s.fallback)} in {s.fallback_precision.value}"
               + (f", FP32 accuracy {s.task.reference_accuracy:.2%}, this build {s.task.candidate_accuracy:.2%}"
                  if s.task.candidate_accuracy is not None else "") + ".")
    st.caption(execution_note(s.config.precision))

command = command_expander(result, expanded=True)
files = result.files
key = (cached.stamp(files / "summary.json"), cached.stamp(before.files / "summary.json") if before is not None else None, command)


def _report(offline: bool = False) -> str:
    return build_report(result.layers, s, before.layers if before is not None else None,
                        before.summary if before is not None else None, command,
                        tuple(c.sentence() for c in s.channel_splits if c.hides) + tuple(a.sentence for a in s.amplifiers[:5]),
                        offline=offline)


report = cached.report(key, _report)
d1, d2, d3, d4, d5 = st.columns(5)
stem = s.file_stem()  # the user's model and this build, not the run folder's candidate.onnx
# Every file is made on the click (deferred) and a click does not rerun the page (on_click="ignore"): each full rerun
# registers new files and drops the last run's, so a second download clicked while the first one's rerun was under way
# asked for a dropped file ("Deferred file ... not found" in the server log, nothing saved in the browser).
d1.download_button("Model (.onnx)", (files / "candidate.onnx").read_bytes, f"{stem}.onnx", on_click="ignore",
                   help="The rebuilt Q/DQ model: nodes in fallback have no Q/DQ around them.")
d2.download_button("layers.csv", (files / "layers.csv").read_bytes, f"{stem}_layers.csv", on_click="ignore")
d3.download_button("summary.json", (files / "summary.json").read_bytes, f"{stem}_summary.json", on_click="ignore")
d4.download_button("HTML report", lambda: report, f"{stem}_report.html", mime="text/html", on_click="ignore",
                   help=f"{len(report.encode()) / 1e6:.2f} MB; its plots load plotly.js from {PLOTLY_JS_NAME} beside it, "
                        "else online. The offline report carries plotly.js itself.")
# plotly.js inlined: the plots draw from the one file, mailed or opened without a network (made on the click)
d5.download_button("HTML report, offline", lambda: _report(offline=True), f"{stem}_report_offline.html", mime="text/html",
                   on_click="ignore", help=f"About {(len(report.encode()) + plotly_js_size()) / 1e6:.1f} MB: the same report "
                                       "with plotly.js inside, so its plots draw without a network.")
