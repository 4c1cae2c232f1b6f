"""Typed, frozen results; `to_dict()` is exactly what summary.json holds and `from_dict()` reads it back."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from engine.compare.metrics import METRIC_COLUMNS, TensorStats, json_number, outputs_snr_db
from engine.compare.output_channels import ChannelSplit
from engine.compare.task_metrics import TaskMetrics
from engine.quantize.config import FallbackPrecision, QuantConfig, in_name_order

__all__ = ["OutputMetrics", "Culprit", "Amplifier", "RankingInfo", "Summary", "ComparisonResult", "FUSION_DISAGREEMENT_DB", "ROUGH_FIRST_STAGE_DB",
           "json_number", "read_number", "not_like_for_like"]

FUSION_DISAGREEMENT_DB = 1.0


# past this difference between the ranking's first-stage and refined figures of the same units, the figures of the
# units measured on the first stage only are not given: they are noise (see harm_ranking.first_stage_error)
ROUGH_FIRST_STAGE_DB = 6.0


def read_number(x) -> float:
    return float(x) if x is not None else math.nan


@dataclass(frozen=True)
class OutputMetrics:
    """A final output's statistics from the unmodified candidate run, plus the same output's SNR in the
    run with every tensor marked (the two differ when marking outputs changed fusion)."""

    name: str
    stats: TensorStats
    marked_run_snr_db: float = math.nan

    @property
    def snr_db(self) -> float:
        return self.stats.snr_db

    @property
    def cosine(self) -> float:
        return self.stats.cosine

    def __getitem__(self, column: str) -> float:
        return self.stats[column]

    @property
    def fusion_disagrees(self) -> bool:
        a, b = self.snr_db, self.marked_run_snr_db
        if math.isinf(a) and math.isinf(b):
            return False
        return not (abs(a - b) <= FUSION_DISAGREEMENT_DB)

    def to_dict(self) -> dict:
        return {**{k: json_number(v) for k, v in self.stats.to_dict().items()},
                "marked_run_snr_db": json_number(self.marked_run_snr_db), "fusion_disagrees": self.fusion_disagrees}

    @classmethod
    def from_dict(cls, name: str, d: dict) -> OutputMetrics:
        stats = TensorStats({c: read_number(d.get(c)) for c in METRIC_COLUMNS}, int(d.get("elements", 0)))
        return cls(name, stats, read_number(d.get("marked_run_snr_db")))


@dataclass(frozen=True)
class Culprit:
    """A fallback unit (a quantized node, or a group of them), ranked by its measured harm to the final outputs."""

    rank: int
    node: str  # the unit's name: its node, or its nodes joined by '+'
    nodes: tuple[str, ...]
    op_type: str
    alone_snr_db: float  # final outputs' SNR with only this unit in INT8 (nan where the ranking was not measured)
    gain_db: float  # how much falling back only this unit raises the final outputs' SNR (nan where not measured)
    snr_db: float  # layerwise view: SNR of its output tensor in the all-INT8 run
    input_snr_db: float
    introduced_db: float
    samples: int = 0  # how many samples alone_snr_db and gain_db were measured on (0: not measured); a staged ranking
    # measures the top of the list on more samples than the rest

    def to_dict(self) -> dict:
        return {"rank": self.rank, "node": self.node, "nodes": list(self.nodes), "op_type": self.op_type,
                "alone_snr_db": json_number(self.alone_snr_db), "gain_db": json_number(self.gain_db), "snr_db": json_number(self.snr_db),
                "input_snr_db": json_number(self.input_snr_db), "introduced_db": json_number(self.introduced_db),
                "samples": self.samples}

    @classmethod
    def from_dict(cls, d: dict, rank: int) -> Culprit:
        return cls(int(d.get("rank", rank)), d["node"], tuple(d.get("nodes", (d["node"],))), d["op_type"],
                   read_number(d.get("alone_snr_db")), read_number(d.get("gain_db")), read_number(d.get("snr_db")),
                   read_number(d.get("input_snr_db")),
                   read_number(d.get("introduced_db")), int(d.get("samples", 0)))


@dataclass(frozen=True)
class Amplifier:
    """A node that is not quantized but makes the noise it receives larger relative to the signal (a Mul of two
    noisy branches, an attention MatMul): ticking it would change nothing, so it is shown beside the ranking."""

    node: str
    op_type: str
    source: str  # the node that produced its noisiest input
    amplification_db: float  # input SNR minus output SNR

    @property
    def sentence(self) -> str:
        return (f"{self.node} ({self.op_type}) is not quantized but amplifies the noise from {self.source} "
                f"by {self.amplification_db:.1f} dB")

    def to_dict(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "source": self.source, "amplification_db": json_number(self.amplification_db)}

    @classmethod
    def from_dict(cls, d: dict) -> Amplifier:
        return cls(d["node"], d["op_type"], d["source"], read_number(d["amplification_db"]))


@dataclass(frozen=True)
class RankingInfo:
    method: str  # "measured harm" or "introduced noise" (when probes were skipped or impossible)
    samples: int  # the samples the top of the ranking was measured on (at most the screening subset)
    probes: int
    all_int8_snr_db: float  # the final outputs on that subset with every unit in INT8
    reused: bool = False  # taken from the run's earlier ranking (same quantization but for the fallback set)
    view: str = ""  # "alone" or "gain": which isolated view orders the list (its top three recovered more)
    top_set_gain_db: dict[str, float] = field(default_factory=dict)  # per view: its top three fallen back together
    plan: str = ""  # the probe stages within the ranking's budget, e.g. "every unit on 4 samples, the 10 strongest of both views on 32"
    seconds: float = math.nan  # what its probes took when they were measured (a reused ranking keeps the original's)
    work: float = 0.0  # their cost in sample-passes (HarmRanking.work): seconds / work is a probe sample's cost here
    first_stage_error_db: float = math.nan  # HarmRanking.first_stage_error_db: past ROUGH_FIRST_STAGE_DB the figures of
    # the units measured on the first stage only are not given (Culprit.rough)

    def to_dict(self) -> dict:
        return {"method": self.method, "samples": self.samples, "probes": self.probes,
                "all_int8_snr_db": json_number(self.all_int8_snr_db), "reused": self.reused, "view": self.view,
                "top_set_gain_db": {k: json_number(v) for k, v in self.top_set_gain_db.items()}, "plan": self.plan,
                "seconds": json_number(self.seconds), "work": self.work,
                "first_stage_error_db": json_number(self.first_stage_error_db)}

    @classmethod
    def from_dict(cls, d: dict | None) -> RankingInfo:
        d = d or {}
        return cls(d.get("method", "introduced noise"), int(d.get("samples", 0)), int(d.get("probes", 0)),
                   read_number(d.get("all_int8_snr_db")), bool(d.get("reused", False)), d.get("view", ""),
                   {k: read_number(v) for k, v in (d.get("top_set_gain_db") or {}).items()}, d.get("plan", ""),
                   read_number(d.get("seconds")), float(d.get("work", 0.0)), read_number(d.get("first_stage_error_db")))


def outputs_together(outputs: dict[str, OutputMetrics], names: tuple[str, ...] = ()) -> float:
    """The final outputs `names` (default: all) together, each against its own signal (the mean of their noise-to-signal
    ratios), as the ranking and the headline measure a model with several outputs; a one-output model's final-output
    SNR. The ranking scores float outputs only: an integer output (an ArgMax label) equal in both adds an infinite SNR."""
    chosen = [m for o, m in outputs.items() if not names or o in names]
    return outputs_snr_db([10 ** (-m.snr_db / 10) if not math.isnan(m.snr_db) else math.nan for m in chosen])


@dataclass(frozen=True)
class Summary:
    model: str
    backend: str
    backend_note: str
    samples: int
    batches: int
    batch_size: int
    outputs: dict[str, OutputMetrics]
    task: TaskMetrics
    culprits: tuple[Culprit, ...]  # every fallback candidate, most harmful first
    headline: str
    fallback: tuple[str, ...]
    fallback_precision: FallbackPrecision
    fp16_nodes: tuple[str, ...]
    quantized_nodes: int
    config: QuantConfig
    timings: dict[str, float]
    ranking: RankingInfo = field(default_factory=lambda: RankingInfo("introduced noise", 0, 0, math.nan))
    amplifiers: tuple[Amplifier, ...] = ()
    not_observable: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    recalibrated: bool = True
    unmodified_candidate_batches: int = 0
    passes: int = 1  # candidate/reference passes per batch (tensors observed in groups when one pass would not fit memory)
    engine: dict | None = None  # TensorRT: the engine's layers, Reformat count and precisions
    model_sha256: str = ""  # what was compared: the model file's and the samples' content digests ("": not known)
    data_sha256: str = ""
    channel_splits: tuple[ChannelSplit, ...] = ()  # outputs with small-scale channels (a detector's scores) and their SNR
    # the units this build keeps in fallback, their alone/gain figures as the all-INT8 ranking measured them (rank 0: not a
    # candidate any more; the layerwise columns are this build's), so a user deciding whether to untick one still sees
    # what it cost in INT8
    held: tuple[Culprit, ...] = ()
    float_outputs: tuple[str, ...] = ()  # the outputs of a float type, which the ranking and the headline count (empty:
    # a summary from before it was recorded: every output)

    def small_channels(self, output: str) -> ChannelSplit | None:
        return next((c for c in self.channel_splits if c.output == output), None)

    def outputs_together_snr_db(self) -> float:
        return outputs_together(self.outputs, self.float_outputs)

    def file_stem(self) -> str:
        """What this build's downloads are named after: the user's model, the build in words and a short digest of its
        whole configuration, e.g. 'resnet18_int8_2fp16_1ranges_3f9a2c' (two nodes in FP16 fallback, one custom range),
        never the run folder's generic candidate.onnx. The digest tells apart builds the words do not (another
        calibration method, another pair of nodes, ranges alone): such downloads overwrote each other."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(self.model).stem).strip("._") or "model"
        build = self.config.precision.value + (f"_{len(self.fallback)}{self.fallback_precision.value}" if self.fallback else "")
        build += f"_{len(self.config.ranges)}ranges" if self.config.ranges else ""
        whole = {**self.config.to_dict(), "fallback": in_name_order(self.fallback), "fallback_precision": self.fallback_precision.value}
        return f"{stem}_{build}_{hashlib.sha256(json.dumps(whole, sort_keys=True).encode()).hexdigest()[:6]}"

    def to_dict(self) -> dict:
        d = {
            "model": self.model, "backend": self.backend, "backend_note": self.backend_note, "samples": self.samples,
            "batches": self.batches, "batch_size": self.batch_size,
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
            "task": self.task.to_dict(),
            "culprits": [c.node for c in self.culprits],
            "culprit_details": [c.to_dict() for c in self.culprits],
            "ranking": self.ranking.to_dict(),
            "amplifiers": [a.to_dict() for a in self.amplifiers],
            "headline": self.headline, "fallback": list(self.fallback), "fallback_precision": self.fallback_precision.value,
            "fp16_nodes": list(self.fp16_nodes), "quantized_nodes": self.quantized_nodes, "config": self.config.to_dict(),
            "timings": {k: round(float(v), 4) for k, v in self.timings.items()},
            "not_observable": list(self.not_observable), "warnings": list(self.warnings), "recalibrated": self.recalibrated,
            "unmodified_candidate_batches": self.unmodified_candidate_batches, "passes": self.passes,
            "model_sha256": self.model_sha256, "data_sha256": self.data_sha256,
            "channel_splits": [c.to_dict() for c in self.channel_splits],
            "float_outputs": list(self.float_outputs),
            "held_in_fallback": [c.to_dict() for c in self.held],
        }
        if self.engine is not None:
            d["engine"] = self.engine
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Summary:
        return cls(
            model=d["model"], backend=d["backend"], backend_note=d.get("backend_note", ""), samples=int(d["samples"]),
            batches=int(d["batches"]), batch_size=int(d["batch_size"]),
            outputs={k: OutputMetrics.from_dict(k, v) for k, v in d["outputs"].items()},
            task=TaskMetrics.from_dict(d.get("task") or {}),
            culprits=tuple(Culprit.from_dict(c, i + 1) for i, c in enumerate(d.get("culprit_details", ()))),
            headline=d["headline"], fallback=tuple(d["fallback"]),
            fallback_precision=FallbackPrecision.parse(d.get("fallback_precision", "fp16")),
            fp16_nodes=tuple(d.get("fp16_nodes", ())), quantized_nodes=int(d["quantized_nodes"]),
            config=QuantConfig.from_dict(d["config"]), timings={k: float(v) for k, v in d.get("timings", {}).items()},
            ranking=RankingInfo.from_dict(d.get("ranking")), amplifiers=tuple(Amplifier.from_dict(a) for a in d.get("amplifiers", ())),
            not_observable=tuple(d.get("not_observable", ())), warnings=tuple(d.get("warnings", ())),
            recalibrated=bool(d.get("recalibrated", True)), unmodified_candidate_batches=int(d.get("unmodified_candidate_batches", 0)),
            passes=int(d.get("passes", 1)), engine=d.get("engine"), model_sha256=d.get("model_sha256", ""),
            data_sha256=d.get("data_sha256", ""),
            channel_splits=tuple(ChannelSplit.from_dict(c) for c in d.get("channel_splits", ())),
            held=tuple(Culprit.from_dict(c, 0) for c in d.get("held_in_fallback", ())),
            float_outputs=tuple(d.get("float_outputs", ())),
        )


@dataclass(frozen=True)
class ComparisonResult:
    run_dir: Path  # the run folder (rebuilds, sensitivity and latency start from it)
    layers: pd.DataFrame
    summary: Summary
    files_dir: Path | None = None  # where this version's candidate.onnx/layers.csv/summary.json are, if not run_dir

    @property
    def files(self) -> Path:
        """The folder holding this result's candidate.onnx, layers.csv and summary.json (history/N once superseded)."""
        return self.files_dir or self.run_dir

    def final_output(self) -> OutputMetrics:
        return next(iter(self.summary.outputs.values()))

    def to_frame(self) -> pd.DataFrame:
        return self.layers

    def to_dict(self) -> dict:
        return self.summary.to_dict()


def not_like_for_like(a: Summary, b: Summary) -> str | None:
    """One sentence where two results differ in more than the build (another model file, other samples), so their
    difference is not the build's alone; None where they compared the same model on the same data (or cannot tell)."""
    digests = bool(a.model_sha256 and b.model_sha256)
    if (digests and a.model_sha256 != b.model_sha256) or (not digests and a.model != b.model):
        # without both digests (a run from before they were recorded) the names are all there is to go by
        files = f"{a.model} and {b.model}" if a.model != b.model else f"two versions of {a.model}"
        return f"These runs are of different model files ({files}), so their difference is not the build's alone."
    if a.samples != b.samples or (a.data_sha256 and b.data_sha256 and a.data_sha256 != b.data_sha256):
        counts = f"{a.samples} and {b.samples} samples" if a.samples != b.samples else f"{a.samples} samples each"
        return (f"These runs compared on different data ({counts}), so part of their difference is the data's, not the "
                "build's; compare them on the same data to see what the build changed.")
    return None
