"""Sweep: many quantization configurations of the inputs in use (calibration method and percentile, op types,
precision), compared on the final outputs with the best one marked; any of them opens as a normal comparison."""

from __future__ import annotations

import streamlit as st

import engine
from app import cached, state
from app import sweeps as sw
from app.actions import busy, job_panel, open_configuration, run_sweep, show_error
from app.cached import model_op_types
from app.plots import sweep_figure
from app.report import EXECUTION_NOTE, FP8_NOTE
from app.summary_view import batch_size_input, inputs_in_use
from engine import Precision

st.title("Sweep quantization configurations")
ss = st.session_state
inputs, blocked = inputs_in_use()
st.caption("Each combination of the choices below is one configuration: quantized, run on the evaluation data and compared "
           "with FP32 on the final outputs, with its culprit and latency (`quantscope sweep`). What they share (pre-processing, "
           "one calibration pass, the FP32 outputs) is computed once.")

model_ops = model_op_types(inputs.model if inputs is not None else None)
sets = sw.op_type_sets(model_ops)

# defaults in Session State, not as the widgets' values: the values are kept across pages (state.KEPT_WIDGETS), and a
# widget given both logs Streamlit's warning
for k, v in {"sw_methods": list(sw.METHOD_NAMES), "sw_percentiles": "99.99, 99.999", "sw_precisions": [Precision.INT8.value],
             "sw_op_sets": list(sets)[:1]}.items():
    ss.setdefault(k, v)
state.keep_choices_within("sw_op_sets", sets, list(sets)[:1])  # kept from another model's page
c1, c2, c3 = st.columns([3, 2, 2])  # three method chips fit (the third was clipped at 1400 px)
methods = c1.multiselect("Calibration methods", list(sw.METHOD_NAMES), format_func=sw.METHOD_NAMES.get, key="sw_methods")
percentiles = c2.text_input("Percentiles", key="sw_percentiles", disabled="percentile" not in methods,
                            help="For Percentile calibration, one configuration each (comma-separated, 90 to 100).")
precisions = c3.multiselect("Precisions", [p.value for p in Precision], format_func=str.upper,
                            key="sw_precisions", help="FP8 is E4M3 Q/DQ; where the backend cannot run it, its rows say so.")
slots = {"methods": c1.empty(), "percentiles": c2.empty(), "precisions": c3.empty()}
chosen_sets = st.multiselect("Op types to quantize (one configuration per set)", list(sets),
                             key="sw_op_sets", help="TensorRT runs Conv, ConvTranspose, Gemm and MatMul in INT8 when their "
                                                    "inputs carry Q/DQ; the other sets add this model's own op types.")
slots["op_types"] = st.empty()
c4, c5, c6 = st.columns(3)
batch = batch_size_input(c4, inputs, "sw_batch")
provider = c5.selectbox("Provider", list(engine.PROVIDERS), key="sw_provider")
select = c6.selectbox("Best by", list(engine.SELECT_METRICS), format_func=lambda m: sw.SELECT_LABELS.get(m, m), key="sw_select",
                      help="The metric that marks the best configuration (--select).")
slots |= {"batch": c4.empty(), "provider": c5.empty(), "select": c6.empty(), "images": st.empty()}

plan_error = None
try:
    plan = sw.plan_sweep(methods, percentiles, [sets[s] for s in chosen_sets], precisions, select,
                         inputs is not None and inputs.labels is not None)
except engine.ConfigError as err:
    plan, plan_error = None, err
if st.button("Run sweep", type="primary", disabled=busy() or blocked is not None or inputs is None,
             help=blocked or ("A job of this session is running." if busy() else
                              f"{plan.size} configuration(s)." if plan is not None else None)):
    if plan_error is not None:
        show_error(str(plan_error), plan_error.option, slots)
    else:
        run_sweep(inputs, plan, int(batch), provider)
job_panel("sweep", slots)

swept: sw.Swept | None = ss.get(state.SWEEP)
if swept is None:
    job = ss.get(state.JOB)
    if job is None or not (job.active and job.kind == "sweep"):  # under the running sweep's bar it read as nothing started
        st.info("No sweep yet: choose what to sweep and click Run sweep.")
    st.stop()

result = swept.result
rows = list(result.rows)
st.subheader(f"{len(rows)} configuration(s) of {swept.model_name}")
if sentence := sw.best_sentence(result):
    st.success(sentence)
else:
    st.warning(f"No configuration has a {sw.SELECT_LABELS.get(result.select, result.select)}, so none is marked best; pick "
               "another Best by and sweep again.")
st.caption(f"Batch {swept.batch}, provider {swept.provider}; {sum(r.seconds for r in rows):.1f} s over all configurations. "
           f"Click a column's header to sort. Each culprit comes from a quick ranking on {engine.SWEEP_SCREEN_SAMPLES} samples spread over the data, "
           "so a comparison's fuller ranking can name another; open a configuration for it. Cosine here is taken over "
           "all samples at once, where a comparison's is the mean of its batches' cosines, so the two differ slightly "
           "(SNR is the same). Latency is timed once per op-type set and precision, so rows differing only in calibration share it. "
           + EXECUTION_NOTE + (" " + FP8_NOTE if any(r.config.precision is engine.Precision.FP8 for r in result.rows) else ""))
if not swept.openable and inputs is not None and (again := swept.on_inputs(inputs, cached.content_key(inputs))) is not None:
    swept = ss[state.SWEEP] = again
    st.caption(f"The files this sweep ran on were loaded again ({inputs.name}), so its configurations open on them.")
if not swept.openable:
    st.warning(f"The files this sweep ran on ({swept.model_name}) are no longer in this workspace, so its configurations cannot "
               "be opened; load the same files again on the Load page, or sweep again.")
elif inputs is not None and swept.inputs != inputs:
    st.warning(f"This sweep ran on {swept.inputs.name}, not on the inputs in use now ({inputs.name}); opening a configuration "
               f"compares {swept.inputs.name}.")
table = sw.table_frame(result)
short, shared = sw.short_labels([r.config.label for r in rows])
if shared:  # said once, not on every row
    st.caption(f"Every configuration: {shared}.")
st.dataframe(table, hide_index=True, width="stretch", placeholder="–", key="sweep_table", column_order=sw.column_order(table),
             column_config=sw.column_config(st.column_config, result.select))
for r in rows:
    if r.note:
        st.caption(f"{r.config.label}: {r.note}")
frame = result.to_frame().assign(config=short)
st.plotly_chart(sweep_figure(frame, result.select), key="sweep_plot", width="stretch")

st.subheader("Open a configuration")
index = next((i for i, r in enumerate(rows) if r.best), 0)
c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
pick = c1.selectbox("Configuration", range(len(rows)), index=index, key="sw_open",
                    format_func=lambda i: f"{sw.BEST} " * rows[i].best + rows[i].config.label)
row = rows[pick if pick is not None and pick < len(rows) else index]
why_not = ("This configuration has no numbers (see its note), so there is nothing to open." if row.note
           else "The files this sweep ran on are no longer loaded." if not swept.openable
           else "A job of this session is running." if busy() else None)
if c2.button("Open on the Layers page", disabled=why_not is not None, help=why_not or
             "Runs a comparison with this configuration on the same inputs (the Compare page's job) and shows it on the "
             "Layers page; the Compare page's settings become this configuration's."):
    open_configuration(swept, row)
job_panel("compare")
