"""The HTML report: one file well under 1 MB. Pure: results in, a string out.

plotly.js (4.8 MB) is not inlined: the page loads it once, first from a `plotly.min.js` beside the report, else from the
plotly CDN at the version the figures were made with; the offline report (offline=True, a second download on the
Rebuild page) carries it inside instead. The tables (outputs, task metrics, culprits, the command) are plain HTML
and read without any script; only the two plots need plotly.js, and the page says so if it cannot load."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import pandas as pd
import plotly
from plotly.offline import get_plotlyjs_version

import engine
from app.layer_table import origins, ranking_sentence
from app.plots import NOISE_FLOOR_DB, before_after_figure, layer_figure

__all__ = ["build_report", "plotly_js", "plotly_js_size", "PLOTLY_JS_NAME", "MAX_CULPRITS", "EXECUTION_NOTE", "FP8_NOTE", "execution_note"]

PLOTLY_JS_NAME = "plotly.min.js"
MAX_CULPRITS = 15
FULL_HOVER_ROWS = 300  # beyond this many tensors the report's plot hovers name the node and its values only


def _plotly_js_path() -> Path:
    return Path(plotly.__file__).parent / "package_data" / PLOTLY_JS_NAME


def plotly_js() -> bytes:
    """The plotly.js the figures were made for, from the installed plotly package (for viewing reports offline)."""
    return _plotly_js_path().read_bytes()


def plotly_js_size() -> int:
    return _plotly_js_path().stat().st_size


def _e(x) -> str:
    return html.escape(str(x))


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2%}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _outputs(summary: engine.Summary) -> str:
    cols = [m for m in engine.METRICS]
    rows = [[f"<code>{_e(name)}</code>"] + [_e(engine.format_metric(m.column, float(o[m.column]))) for m in cols]
            for name, o in summary.outputs.items()]
    if len(summary.outputs) > 1:  # the figure the headline and the pages' first tile use
        counted = len(summary.float_outputs) if summary.float_outputs else len(summary.outputs)
        rows.append([f"all {counted} outputs together (each against its own signal)" if counted == len(summary.outputs)
                     else f"its {counted} float output{'s' if counted != 1 else ''} together (each against its own signal)"]
                    + [_e(engine.format_metric("snr_db", summary.outputs_together_snr_db())) if m.column == "snr_db" else ""
                       for m in cols])
    return _table(["output"] + [m.label for m in cols], rows)


def _task(summary: engine.Summary, before: engine.Summary | None) -> str:
    t = summary.task
    if t.top1_agreement is None and t.text_agreement is None:
        return "<p>The outputs are neither classifier-shaped nor a CTC recogniser's scores, so there are no task metrics.</p>"
    b = before.task if before is not None else None
    rows = []
    for label, attr in (("FP32 accuracy", "reference_accuracy"), ("accuracy of this build", "candidate_accuracy"),
                        ("accuracy drop", "accuracy_drop"), ("top-1 agreement with FP32", "top1_agreement"),
                        ("text read the same as FP32 (greedy CTC decoding)", "text_agreement")):
        if getattr(t, attr) is None:
            continue  # no labels: no accuracy rows
        rows.append([label] + ([_pct(getattr(b, attr))] if b is not None else []) + [_pct(getattr(t, attr))])
    header = ["", "before", "after"] if b is not None else ["", "this build"]
    return _table(header, [[_e(c) for c in r] for r in rows]) + f"<p>On {t.samples} samples.</p>"


def _culprits(summary: engine.Summary, layers: pd.DataFrame) -> str:
    origin = origins(layers)
    rows = []
    for c in summary.culprits[:MAX_CULPRITS]:
        rows.append([str(c.rank), f"<code>{_e(c.node)}</code>", _e(", ".join(str(origin.get(n, "")) for n in c.nodes)), _e(c.op_type),
                     _e(engine.format_metric("snr_db", c.alone_snr_db)),
                     _e("" if c.gain_db != c.gain_db else f"{c.gain_db:+.2f}"), _e(str(c.samples) if c.samples else ""),
                     _e(engine.format_metric("snr_db", c.snr_db)),
                     _e("not measured" if c.introduced_db != c.introduced_db else "none measurable" if c.introduced_db <= NOISE_FLOOR_DB
                        else f"{c.introduced_db:.1f}")])
    more = f"<p>{len(summary.culprits) - MAX_CULPRITS} more in summary.json.</p>" if len(summary.culprits) > MAX_CULPRITS else ""
    return (f"<p>{_e(ranking_sentence(summary.ranking, summary.culprits, quantized=summary.config.precision.label))}</p>" + _table(["rank", "node", "from your file", "op", f"outputs SNR (dB), only it {summary.config.precision.label}",
                                          "outputs SNR gain (dB), only it in fallback", "ranked on (samples)",
                                          "its output's SNR (dB)", "noise it adds (dB)"], rows) + more)


_LOADER = """<script>
var QS_FIGURES = %s;
function qsDraw() { QS_FIGURES.forEach(function (f) { Plotly.newPlot(f.id, f.fig.data, f.fig.layout, {responsive: true}); }); }
function qsNoPlotly() { document.querySelectorAll('.qs-plot').forEach(function (d) { d.innerHTML =
  '<p class="note">The plots need plotly.js, which could not load: put %s next to this file, open it online, or ' +
  'download the \u201cHTML report, offline\u201d from the dashboard, which carries its plots.</p>'; }); }
(function () {
  var local = document.createElement('script');
  local.src = '%s';
  local.onload = qsDraw;
  local.onerror = function () {
    var cdn = document.createElement('script');
    cdn.src = 'https://cdn.plot.ly/plotly-%s.min.js';
    cdn.onload = qsDraw; cdn.onerror = qsNoPlotly;
    document.head.appendChild(cdn);
  };
  document.head.appendChild(local);
})();
</script>"""


EXECUTION_NOTE = (  # beside every accuracy figure: the pages and the report (a trial's ORT run of the download disagreed)
    "Accuracy figures are of this Q/DQ model as the comparison's backend ran it: on ONNX Runtime, computed as written "
    "with float biases (what TensorRT computes); on TensorRT, its built engine. ONNX Runtime's own optimized execution of "
    "the same file differs (from its basic optimization level on it quantizes biases to int32, and at its default level "
    "it fuses its own INT8 kernels): check the downloaded model in the runtime you deploy with.")
FP8_NOTE = (  # an FP8 run read the INT8 note above, about int32 biases and INT8 kernels (ShuffleNet trial)
    "Accuracy figures are of this FP8 (E4M3) Q/DQ model as the comparison's backend ran it, computed as written. ONNX "
    "Runtime has no FP8 arithmetic on the CPU and emulates it, so there an FP8 run is slower than INT8 and its latency "
    "says nothing of a GPU's; TensorRT runs FP8 Q/DQ on Hopper and later: check the downloaded model there.")


def execution_note(precision: engine.Precision) -> str:
    """The note beside accuracy figures of a build in `precision`."""
    return FP8_NOTE if precision is engine.Precision.FP8 else EXECUTION_NOTE


def build_report(layers: pd.DataFrame, summary: engine.Summary, before_layers: pd.DataFrame | None = None,
                 before_summary: engine.Summary | None = None, command: str = "", notes: tuple[str, ...] = (),
                 offline: bool = False) -> str:
    """offline: plotly.js inlined (about 5 MB in all), so the plots draw from the file alone, mailed or opened without a
    network (a browser trial's report read 'The plots need plotly.js' with nothing beside it)."""
    figures = [("qs-layers", layer_figure(layers, fallback=set(summary.fallback), quantized=summary.config.precision.label,
                                          top=summary.culprits[0].node if summary.culprits else None,
                                          full_hover=len(layers) <= FULL_HOVER_ROWS))]
    if before_layers is not None:
        figures.append(("qs-before-after", before_after_figure(
            before_layers, layers, changed=set(before_summary.fallback) ^ set(summary.fallback) if before_summary else frozenset())))
    payload = json.dumps([{"id": fid, "fig": json.loads(fig.to_json())} for fid, fig in figures], separators=(",", ":"))
    payload = payload.replace("</", "<\\/")  # never close the script element early
    ranges = ", ".join(str(r) for r in summary.config.ranges) or "none"
    before_html = f"<h2>Before this rebuild</h2>{_outputs(before_summary)}" if before_summary is not None else ""
    notes_html = "".join(f"<li>{_e(n)}</li>" for n in notes)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>QuantScope report: {_e(summary.model)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}} .note{{color:#666}} code{{font-size:95%}}</style>
</head><body><h1>QuantScope report: {_e(summary.model)}</h1>
<p>{_e(summary.headline)}</p>
<p>Backend: {_e(summary.backend)}; {summary.samples} samples in {summary.batches} batch{'es' if summary.batches != 1 else ''} of {summary.batch_size};
precision {_e(summary.config.precision.label)}; calibration {_e(summary.config.calibration.value)}; op types {_e(', '.join(summary.config.op_types))};
fallback ({_e(summary.fallback_precision.value)}): {_e(', '.join(summary.fallback) or 'none')}; custom ranges: {_e(ranges)}.</p>
<h2>Final outputs</h2><p class="note">{_e(execution_note(summary.config.precision))}</p>{_outputs(summary)}{before_html}
<h2>Task metrics</h2>{_task(summary, before_summary)}
<h2>Culprits</h2>{_culprits(summary, layers)}
{f'<ul>{notes_html}</ul>' if notes_html else ''}
<h2>Per layer</h2><div id="qs-layers" class="qs-plot"></div>
{'<h2>Before and after</h2><div id="qs-before-after" class="qs-plot"></div>' if before_layers is not None else ''}
<h2>Reproduce</h2><pre>{_e(command)}</pre>
{_plots_script(payload, offline)}
</body></html>"""


def _plots_script(payload: str, offline: bool) -> str:
    if not offline:
        return (f'<p class="note">Plots load plotly.js {get_plotlyjs_version()} from {PLOTLY_JS_NAME} beside this file, else '
                f"from cdn.plot.ly.</p>\n{_LOADER % (payload, PLOTLY_JS_NAME, PLOTLY_JS_NAME, get_plotlyjs_version())}")
    js = plotly_js().decode("utf-8").replace("</script", "<\\/script")  # none today; never close the element early
    return (f'<p class="note">plotly.js {get_plotlyjs_version()} is inlined: this file draws its plots offline.</p>\n'
            f"<script>{js}</script>\n<script>var QS_FIGURES = {payload};\nQS_FIGURES.forEach(function (f) {{ "
            "Plotly.newPlot(f.id, f.fig.data, f.fig.layout, {responsive: true}); });</script>")
