"""The Sweep page's pure pieces: the op-type sets it offers, what a sweep runs (checked before anything is queued, each
refusal one sentence naming its control), the table of a finished sweep, and the Compare page's settings for one of
its configurations. Values in, values out: no Streamlit."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

import engine
from app.inputs import Inputs
from app.table_columns import filled_columns

__all__ = ["METHOD_NAMES", "SELECT_LABELS", "PERCENTILE_RANGE", "BEST", "SweepPlan", "Swept", "op_type_sets", "plan_sweep",
           "table_frame", "short_labels", "column_order", "column_config", "best_sentence", "compare_settings"]

METHOD_NAMES = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
SELECT_LABELS = {"snr_db": "final-output SNR", "cosine": "final-output cosine", "top1_agreement": "top-1 agreement with FP32",
                 "accuracy": "accuracy", "text_agreement": "text read the same as FP32"}
PERCENTILE_RANGE = (90.0, 100.0)  # the Compare page's percentile bounds: an opened configuration always fits its control
BEST = "★"


@dataclass(frozen=True)
class SweepPlan:
    """The sweep's axes; every combination is one configuration (engine.sweep crosses them)."""

    methods: tuple[str, ...]
    percentiles: tuple[float, ...]  # empty unless percentile is one of the methods
    op_type_sets: tuple[tuple[str, ...], ...]
    precisions: tuple[str, ...]
    select: str

    @property
    def size(self) -> int:
        calibrations = sum(len(self.percentiles) if m == "percentile" else 1 for m in self.methods)
        return calibrations * len(self.op_type_sets) * len(self.precisions)


@dataclass(frozen=True)
class Swept:
    """A finished sweep and what it ran on, so any configuration of it opens on the same inputs and settings. `inputs` is
    None for a sweep reopened after its uploaded files were replaced: its table shows, its configurations cannot open."""

    result: engine.SweepResult
    inputs: Inputs | None
    batch: int
    provider: str
    name: str = ""  # the model's name, as the inputs knew it
    content: tuple[tuple[str, str], ...] = ()  # Inputs.content_key of what it ran on (empty: not known)

    @property
    def openable(self) -> bool:
        """Its inputs are known and still on the server."""
        return self.inputs is not None and self.inputs.present()

    def on_inputs(self, inputs: Inputs | None, content: tuple[tuple[str, str], ...]) -> Swept | None:
        """This sweep opening on `inputs` (whose content key is `content`) where its own files are gone but those are the
        same files uploaded again; None otherwise (a trial's re-upload of the identical files could not open it)."""
        if (self.inputs is not None and self.inputs.present()) or inputs is None or not self.content or content != self.content:
            return None
        return dataclasses.replace(self, inputs=inputs)

    @property
    def model_name(self) -> str:
        return self.inputs.name if self.inputs is not None else self.name or "a model no longer loaded"


def op_type_sets(model_ops: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """label -> op types: TensorRT's four, the four plus each other op type of the model, and the four plus all of them."""
    four = tuple(engine.TRT_INT8_OP_TYPES)
    others = [op for op in sorted(set(model_ops)) if op not in four]
    sets = {f"TensorRT's four ({', '.join(four)})": four}
    sets.update({f"TensorRT's four + {op}": four + (op,) for op in others})
    if len(others) > 1:
        sets[f"TensorRT's four + this model's {len(others)} other op types ({', '.join(others)})"] = four + tuple(others)
    return sets


def _percentiles(text: str) -> tuple[float, ...]:
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise engine.ConfigError(f"The percentiles '{text}' are not comma-separated numbers, e.g. 99.9, 99.999.",
                                 option="percentiles") from None
    if not values:
        raise engine.ConfigError("Percentile calibration needs at least one percentile, e.g. 99.999.", option="percentiles")
    lo, hi = PERCENTILE_RANGE
    for v in values:
        if not (math.isfinite(v) and lo <= v <= hi):
            raise engine.ConfigError(f"The percentile {v:g} is outside {lo:g} to {hi:g} (the Compare page's range); use e.g. "
                                     "99.999.", option="percentiles")
    return tuple(dict.fromkeys(values))


def plan_sweep(methods: Sequence[str], percentiles: str, op_type_sets: Sequence[Sequence[str]], precisions: Sequence[str],
               select: str, has_labels: bool) -> SweepPlan:
    """The sweep the page's controls describe; an engine.ConfigError (with the control's option name) if it cannot run."""
    if not methods:
        raise engine.ConfigError("Choose at least one calibration method to sweep.", option="methods")
    if not op_type_sets:
        raise engine.ConfigError("Choose at least one set of op types to sweep.", option="op_types")
    if not precisions:
        raise engine.ConfigError("Choose at least one precision to sweep (INT8, FP8).", option="precisions")
    if select == "accuracy" and not has_labels:
        raise engine.ConfigError("Accuracy needs labels, and these inputs have none: add labels on the Load page, or pick the "
                                 "best configuration by another metric.", option="select")
    methods = tuple(engine.CalibrationMethod.parse(m).value for m in dict.fromkeys(methods))
    return SweepPlan(methods, _percentiles(percentiles) if "percentile" in methods else (),
                     tuple(dict.fromkeys(tuple(s) for s in op_type_sets)),
                     tuple(engine.Precision.parse(p).value for p in dict.fromkeys(precisions)), select)


def _num(x) -> float | None:
    """NaN (no number) as None, which the table shows blank; inf (identical outputs) stays."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def short_labels(labels: Sequence[str]) -> tuple[list[str], str]:
    """Each configuration's label without the settings every configuration shares, and those shared settings: a sweep of
    methods over TensorRT's four op types wrote 'minmax / Conv+ConvTranspose+Gemm+MatMul / int8' on every row, and its
    table needed scrolling at 1400 px. A single configuration keeps its whole label."""
    parts = [label.split(" / ") for label in labels]
    if len(parts) < 2 or len({len(p) for p in parts}) != 1:
        return list(labels), ""
    same = [len({p[i] for p in parts}) == 1 for i in range(len(parts[0]))]
    if all(same):
        return list(labels), ""
    return [" / ".join(x for x, s in zip(p, same) if not s) for p in parts], " / ".join(x for x, s in zip(parts[0], same) if s)


def table_frame(result: engine.SweepResult) -> pd.DataFrame:
    """One row per configuration in the sweep's order: the best one starred, its settings (named by what differs, see
    short_labels), its numbers (blank where a configuration has none, its note saying why)."""
    rows = []
    labels, _ = short_labels([r.config.label for r in result.rows])
    for r, label in zip(result.rows, labels):
        c = r.config
        percentile = c.calibration.method is engine.CalibrationMethod.PERCENTILE
        rows.append({
            "best": BEST if r.best else None, "configuration": label,
            "calibration": METHOD_NAMES.get(c.calibration.method.value, c.calibration.method.value),
            "percentile": c.calibration.percentile if percentile else None, "op_types": ", ".join(c.op_types),
            "precision": c.precision.label, "snr_db": _num(r.snr_db), "cosine": _num(r.cosine),
            "first_output_snr_db": _num(r.first_output_snr_db), "top1_agreement": _num(r.top1_agreement), "accuracy": _num(r.accuracy),
            "text_agreement": _num(r.text_agreement),
            "quantized_nodes": None if r.note else r.quantized_nodes, "culprit": r.culprit,
            "culprit_alone_snr_db": _num(r.culprit_alone_snr_db), "latency_ms": _num(r.latency_ms),
            "latency_batch": r.latency_batch, "seconds": r.seconds,
            "note": r.note or None,
        })
    return pd.DataFrame(rows)


# the numbers first, so the SNR is in view at 1400 px (after the long configuration label it was off-screen); the settings
# the label already names come last, for sorting
SHOWN_ORDER = ("best", "configuration", "snr_db", "first_output_snr_db", "cosine", "top1_agreement", "accuracy",
               "text_agreement", "culprit", "culprit_alone_snr_db", "quantized_nodes", "latency_ms", "latency_batch", "seconds", "note",
               "calibration", "percentile", "op_types", "precision")


def column_order(table: pd.DataFrame) -> list[str]:
    """The table's columns as shown: numbers first, columns no configuration has left out, and the first output's SNR
    only where it differs from the model's (a model with several outputs)."""
    shown = filled_columns(table, SHOWN_ORDER, always=("best", "configuration"))
    if "first_output_snr_db" in shown:
        a, b = table["snr_db"], table["first_output_snr_db"]
        if ((a == b) | (a.isna() & b.isna())).all():
            shown.remove("first_output_snr_db")
    return shown


def column_config(st_column_config, select: str) -> dict:
    """Column labels and formats; `st_column_config` is streamlit.column_config (kept out of this pure module)."""
    cc = st_column_config
    return {
        "best": cc.TextColumn("best", width="small", help=f"The configuration with the highest {SELECT_LABELS[select]}."),
        "percentile": cc.NumberColumn("percentile", format="%.6g"),  # 99.999 read as 100 at 4 digits
        "op_types": cc.TextColumn("op types"),
        "snr_db": cc.NumberColumn("SNR dB", format="%.2f", help="Final-output SNR against FP32 (higher is better); a model with "
                                  "several outputs: every float output together, each against its own signal, as the "
                                  "Compare page's headline and the ranking measure it."),
        "cosine": cc.NumberColumn("cosine", format="%.5f", help="Final-output cosine similarity against FP32 over all samples at "
                                  "once (the first output's where the model has several); Compare averages its batches' "
                                  "cosines, so it reads slightly differently."),
        "first_output_snr_db": cc.NumberColumn("first output SNR dB", format="%.2f",
                                               help="The first output's own SNR (the cosine beside it is of this output too)."),
        # percentages, as the Compare and Rebuild pages give them (0.9063 beside their 90.62%: browser trial)
        "top1_agreement": cc.NumberColumn("top-1 agreement", format="percent"),
        "accuracy": cc.NumberColumn("accuracy", format="percent"),
        "text_agreement": cc.NumberColumn("text read the same", format="percent",
                                          help="A CTC recogniser: the share of samples whose decoded text is FP32's."),
        "quantized_nodes": cc.NumberColumn("fallback candidates", format="%d",
                                           help="Nodes of the quantized op types with a quantized input."),
        "culprit": cc.TextColumn("culprit", help="The node that hurts the final outputs most alone in INT8 (quick screen)."),
        "culprit_alone_snr_db": cc.NumberColumn("culprit alone SNR dB", format="%.2f",
                                                help="Final-output SNR with only the culprit quantized."),
        "latency_ms": cc.NumberColumn("latency (ms)", format="%.3f", help="Median of a batch, ONNX Runtime fully optimized. Timed "
                                      "once per op-type set and precision: configurations that differ only in calibration "
                                      "build the same nodes with other scales, so they show the same time."),
        "latency_batch": cc.NumberColumn("timed batch", format="%d", help="Samples in the timed batch: the batch size "
                                         "asked for, lowered where one batch would exceed the memory setting "
                                         "(QUANTSCOPE_MEMORY_MB), as the evaluation's batches are."),
        "seconds": cc.NumberColumn("took (s)", format="%.1f"),
        "note": cc.TextColumn("note", help="Why a configuration has no numbers."),
    }


def best_sentence(result: engine.SweepResult) -> str | None:
    """What the best configuration is and by how much (None when no configuration has the metric that picks it)."""
    best = result.best()
    if best is None:
        return None
    label = SELECT_LABELS.get(result.select, result.select)
    snr = engine.format_metric("snr_db", best.snr_db) + (" dB" if math.isfinite(best.snr_db) else "")
    parts = [f"{label} {snr}" if result.select == "snr_db" else f"{label} {getattr(best, result.select):.4f}"]
    if result.select != "snr_db":
        parts.append(f"final-output SNR {snr}")
    if best.culprit:
        parts.append(f"its culprit {best.culprit}")
    return f"Best by {label}: {best.config.label} ({'; '.join(parts)})."


def compare_settings(config: engine.QuantConfig, batch: int | None = None, provider: str | None = None,
                     screen_samples: int | None = None) -> dict[str, object]:
    """The Compare page's controls (their widget keys) set to this configuration, so its equivalent command is this one;
    a control given None keeps its value."""
    out: dict[str, object] = {"cmp_method": config.calibration.value, "cmp_percentile": float(config.percentile),
                              "cmp_ops": list(config.op_types), "cmp_precision": config.precision.value}
    for key, v in (("cmp_batch", batch), ("cmp_provider", provider), ("cmp_screen", screen_samples)):
        if v is not None:
            out[key] = v
    return out
