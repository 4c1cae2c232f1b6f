"""A self-contained HTML report (plotly.js inlined, works offline). Pure: results in, a string out."""

from __future__ import annotations

import html
import json

import pandas as pd

from app.plots import before_after_figure, layer_figure

__all__ = ["build_report", "cli_command"]


def cli_command(model: str, calib: str, data: str | None, labels: str | None, config: dict, batch: int, provider: str,
                fallback: list[str], out: str = "runs/triage") -> str:
    parts = ["quantscope compare", model, f"--calib {calib}"]
    if data:
        parts.append(f"--data {data}")
    if labels:
        parts.append(f"--labels {labels}")
    parts += [f"--batch {batch}", f"--calib-method {config['calibration']}", "--op-types " + " ".join(config["op_types"]),
              f"--provider {provider}"]
    if fallback:
        parts.append("--fallback " + " ".join(fallback))
        parts.append(f"--fallback-precision {config.get('fallback_precision', 'fp16')}")
    parts += [f"--range {r}" for r in config.get("ranges", [])]
    parts.append(f"--out {out}")
    return " \\\n  ".join(parts)


def _table(summary: dict) -> str:
    rows = []
    for name, m in summary["outputs"].items():
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{float(m['cosine']):.6f}</td><td>{m['snr_db']}</td></tr>")
    return "<table><tr><th>output</th><th>cosine</th><th>SNR (dB)</th></tr>" + "".join(rows) + "</table>"


def build_report(layers: pd.DataFrame, summary: dict, before_layers: pd.DataFrame | None = None,
                 before_summary: dict | None = None, command: str = "") -> str:
    fig = layer_figure(layers, fallback=set(summary.get("fallback", [])))
    parts = [fig.to_html(full_html=False, include_plotlyjs="inline")]
    if before_layers is not None:
        parts.append(before_after_figure(before_layers, layers).to_html(full_html=False, include_plotlyjs=False))
    culprits = "".join(f"<li><code>{html.escape(c['node'])}</code> ({html.escape(c['op_type'])}): introduced {float(c['introduced_db']):.1f} dB</li>"
                       for c in summary.get("culprit_details", [])[:10])
    before_html = f"<h2>Before</h2>{_table(before_summary)}" if before_summary else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>QuantScope report: {html.escape(summary['model'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px}}</style>
</head><body><h1>QuantScope report: {html.escape(summary['model'])}</h1>
<p>{html.escape(summary['headline'])}</p>
<p>Backend: {html.escape(summary['backend'])}; samples: {summary['samples']}; fallback ({summary['fallback_precision']}):
{html.escape(', '.join(summary['fallback']) or 'none')}</p>
<h2>Final outputs</h2>{_table(summary)}{before_html}
<h2>Task metrics</h2><pre>{html.escape(json.dumps(summary['task'], indent=2))}</pre>
<h2>Top culprits</h2><ol>{culprits}</ol>
{''.join(parts)}
<h2>Reproduce</h2><pre>{html.escape(command)}</pre>
</body></html>"""
