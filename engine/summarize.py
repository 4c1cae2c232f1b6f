"""From a layerwise run and a culprit ranking to the typed Summary, its headline and layers.csv's ranking columns."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from engine.compare.graph import GraphView
from engine.compare.layerwise import LayerwiseRun
from engine.compare.ranking import FLOOR_DB, rank_culprits
from engine.diagnose.harm_ranking import HarmRanking
from engine.diagnose.run_probe import DEFAULT_SENSITIVITY_SAMPLES
from engine.quantize.config import in_name_order
from engine.results import ROUGH_FIRST_STAGE_DB, Amplifier, Culprit, OutputMetrics, RankingInfo, Summary, outputs_together
from engine.run_config import RunConfig

__all__ = ["summarize", "ranked_layers", "AMPLIFICATION_DB", "MAX_AMPLIFIERS"]

FEW_RANKING_SAMPLES = 4  # a headline measured on fewer samples says they are too few to trust
AMPLIFICATION_DB = 3.0  # a node that is not quantized but loses this much SNR from input to output is an amplifier
MAX_AMPLIFIERS = 8


def _db(x: float) -> str:
    if np.isnan(x):
        return "not measured"
    if np.isinf(x):
        return "exact (inf dB)" if x > 0 else "-inf dB (no signal)"
    return f"{x:.1f} dB"


def _samples(n: int) -> str:
    return f"{n} sample{'s' if n != 1 else ''}"


def _snr_change(before: float, after: float) -> str:
    """'falls from A to B', 'rises from A to B' or 'stays at A' as written (to 0.1 dB): a culprit's SNR can rise across
    it (PP-OCRv4's recogniser: 'falls from 12.3 dB at its input to 12.6 dB'). Where either end was not measured it
    says so rather than compare."""
    if np.isnan(after):
        return "was not measured at its output"
    if np.isnan(before):
        return f"is {_db(after)} at its output (its input was not measured)"
    a, b = (round(x, 1) if np.isfinite(x) else x for x in (before, after))
    if a == b:
        return f"stays at {_db(after)} from its input to its output"
    return f"{'rises' if b > a else 'falls'} from {_db(before)} at its input to {_db(after)} at its output"


def _node_rows(layers: pd.DataFrame) -> dict[str, pd.Series]:
    """Each node's worst output tensor (lowest SNR)."""
    ordered = layers.sort_values("snr_db", na_position="last").drop_duplicates("node")
    return {r["node"]: r for _, r in ordered.iterrows()}


def _culprits(layers: pd.DataFrame, ranking: HarmRanking | None, view: GraphView,
              fallback: frozenset[str]) -> tuple[tuple[Culprit, ...], tuple[Culprit, ...]]:
    """The candidates, most harmful first, and the units this build holds in fallback as the ranking measured them
    (rank 0; their layerwise columns are this build's, where they are no longer quantized)."""
    rows = _node_rows(layers)

    def layer(node: str, col: str) -> float:
        r = rows.get(node)
        return float(r[col]) if r is not None and r[col] == r[col] else math.nan

    out, held = [], []
    if ranking is not None:
        rough = ranking.first_stage_error_db > ROUGH_FIRST_STAGE_DB  # the first stage's figures are noise: not given
        for u in ranking.units:
            main = next((n for n in u.nodes if n in view.quantized_nodes), u.nodes[0])
            hide = rough and u.samples < ranking.samples
            c = Culprit(0, u.name, u.nodes, "+".join(u.op_types), math.nan if hide else u.alone_snr_db,
                        math.nan if hide else u.gain_db, layer(main, "snr_db"), layer(main, "input_snr_db"),
                        layer(main, "introduced_db"), u.samples)
            if set(u.nodes) <= fallback:  # already in fallback: no longer a candidate
                held.append(c)
            else:
                out.append(dataclasses.replace(c, rank=len(out) + 1))
        return tuple(out), tuple(held)
    quantized = layers[layers["node"].isin(view.quantized_nodes) & ~layers["node"].isin(fallback)]
    for _, r in rank_culprits(quantized).iterrows():
        out.append(Culprit(len(out) + 1, r["node"], (r["node"],), r["op_type"], math.nan, math.nan, float(r["snr_db"]),
                           float(r["input_snr_db"]), float(r["introduced_db"])))
    return tuple(out), ()


def _amplifiers(layers: pd.DataFrame, view: GraphView, fallback: frozenset[str] = frozenset()) -> tuple[Amplifier, ...]:
    """Float nodes that make noise louder; a node this build keeps in fallback is not one ('not quantized ... ticking it
    changes nothing' was said of the very node ticked and in fallback)."""
    producer = {t.tensor: t.node for t in view.tensors}
    snr = dict(zip(layers["tensor"], layers["snr_db"]))
    found = []
    for t in view.tensors:
        if t.node in view.quantized_nodes or t.node in fallback or t.tensor not in snr or not np.isfinite(snr[t.tensor]):
            continue
        inputs = [(snr[i], i) for i in t.node_inputs if i in snr and np.isfinite(snr[i])]
        if not inputs:
            continue
        worst_in, source = min(inputs)
        loss = worst_in - snr[t.tensor]
        if loss >= AMPLIFICATION_DB:
            found.append(Amplifier(t.node, t.op_type, producer.get(source, source), loss))
    best: dict[str, Amplifier] = {}
    for a in sorted(found, key=lambda a: -a.amplification_db):
        best.setdefault(a.node, a)
    return tuple(list(best.values())[:MAX_AMPLIFIERS])


def _headline(culprits: tuple[Culprit, ...], ranking: HarmRanking | None, layers: pd.DataFrame,
              fallback: frozenset[str] = frozenset(), outputs_snr_db: float = math.nan, samples: int = 0, q: str = "INT8",
              screen_samples: int | None = None) -> str:
    """q: what the quantized nodes compute in (INT8, FP8): an FP8 run's headline said 'alone in INT8'."""
    # the all-INT8 figure on every sample (every output together, as the ranking measures), where the ranking measured
    # fewer: on a one-output model the Compare page's "Final-output SNR" it sits beside
    whole = (outputs_snr_db, samples) if not fallback and ranking is not None and samples > ranking.samples else None
    sentence = _finding(culprits, ranking, layers, whole, this_build=bool(fallback), q=q)
    if ranking is not None and culprits and (on := culprits[0].samples or ranking.samples) < FEW_RANKING_SAMPLES:
        # 8 samples in all left the ranking one: a node alone in INT8 read worse than every node in INT8 (browser trial)
        # its time budget stopped it, not the data or its sample count: more data would not help
        if min(max(samples, ranking.samples), screen_samples or math.inf) > on:
            sentence += (f" That is {_samples(on)}, too few to trust for this ranking, which measured what its time budget "
                         f"allowed: sensitivity (its page, or `quantscope sensitivity`) measures every node alone on up to "
                         f"{DEFAULT_SENSITIVITY_SAMPLES} samples.")
        elif screen_samples and screen_samples <= on < max(samples, ranking.samples):  # the sample count it was given
            sentence += (f" That is {_samples(on)}, too few to trust for this ranking: give it more (--screen-samples, or "
                         "Ranking samples on the Compare page).")
        else:
            sentence += (f" That is {_samples(on)}, too few to trust for this ranking: compare on more samples (the ranking "
                         "uses up to its sample count, --screen-samples, within its time budget).")
    if ranking is None or not culprits or not fallback:
        return sentence
    # a rebuild keeps the ranking (it measures each node against every node in INT8, whatever the fallback set), and its
    # numbers read as this build's: on PP-OCRv4's recogniser '14.7 dB' beside this build's 14.46 dB
    return (f"{sentence} The ranking measured each node against every node in {q} ({_db(ranking.all_int8_snr_db)} on "
            f"{ranking.samples} samples), not against this build with {len(fallback)} node(s) in fallback ({_db(outputs_snr_db)} "
            f"on {samples} samples): with those in fallback, another node's effect can differ.")


def _finding(culprits: tuple[Culprit, ...], ranking: HarmRanking | None, layers: pd.DataFrame,
             whole: tuple[float, int] | None = None, this_build: bool = False, q: str = "INT8") -> str:
    """this_build: a rebuild with nodes in fallback, whose layerwise curve is its own while the ranking is the all-INT8
    build's (the captcha trial read both halves of one sentence as one build's)."""
    if not culprits:
        return f"No node is left in {q} to rank: every quantizable node is in fallback or none was quantized."
    top = culprits[0]
    which = "this build's" if this_build else "the"
    curve = f"on {which} layerwise curve its SNR {_snr_change(top.input_snr_db, top.snr_db)}"
    if ranking is not None:
        # the top unit's numbers come from the stage that measured it, which a budget-limited plan may run on fewer
        # samples than the all-INT8 figure: say both counts then
        on = top.samples or ranking.samples
        base = f"every node in {q}: {_db(ranking.all_int8_snr_db)}" + (
            f" on {_samples(ranking.samples)}" if on != ranking.samples or whole is not None else "")
        if whole is not None and not math.isnan(whole[0]):  # PP-OCRv4: '14.7 dB' on 16 beside the page's 14.05 dB on 64
            base += f", {_db(whole[0])} on all {whole[1]}"
    if ranking is not None and ranking.view == "gain" and not top.gain_db > 0:
        # after a rebuild the list holds only the nodes still quantized: 'no single fallback' read as a contradiction of
        # the +1.0 dB the ticked node had shown (ShuffleNet trial)
        left = f"of the nodes still in {q}, none" if this_build else "no single fallback"
        return (f"{left[0].upper()}{left[1:]} raises the final outputs on the {_samples(on)} the ranking measured "
                f"({base}; the best, {top.node} ({top.op_type}), changes them "
                f"by {top.gain_db:+.1f} dB): there the {q} error is no larger than what the fallback precision adds, or the "
                f"samples are too few to tell; rank on more samples (--screen-samples) before you trust this list. "
                f"For {top.node}, {curve}.")
    if ranking is not None and ranking.view == "gain":
        return (f"Falling back {top.node} ({top.op_type}) recovers the most: alone in fallback it raises the final outputs "
                f"by {top.gain_db:+.1f} dB on {_samples(on)} ({base}; the list is ordered by this gain because falling back its "
                f"top three together recovered more than the top three by harm); {curve}.")
    if ranking is not None and top.alone_snr_db == math.inf:  # 'hurts most: brings them to exact SNR' (ShuffleNet trial)
        return (f"No node alone in {q} changes the final outputs on {_samples(on)}: each such build gave FP32's outputs "
                f"exactly ({base}); {curve}.")
    if ranking is not None:
        return (f"Quantizing {top.node} ({top.op_type}) hurts the final outputs most: alone in {q} it brings them to "
                f"{_db(top.alone_snr_db)} SNR on {_samples(on)} ({base}); {curve}.")
    if not top.introduced_db > FLOOR_DB:
        return "No quantized node adds measurable error: the candidate matches the reference."
    return (f"Error is introduced at node {top.node} ({top.op_type}): SNR {_snr_change(top.input_snr_db, top.snr_db)} "
            f"(it adds noise at {top.introduced_db:.1f} dB of the signal power; "
            "ranking by measured harm was skipped).")


def ranked_layers(layers: pd.DataFrame, culprits: tuple[Culprit, ...], held: tuple[Culprit, ...] = ()) -> pd.DataFrame:
    """layers.csv with each candidate node's place in the ranking, its alone-in-INT8 SNR, its alone-in-fallback gain and
    the samples those two were measured on; nodes held in fallback (`held`) keep the last two without a place."""
    rank = {n: c.rank for c in culprits for n in c.nodes}
    measured = (*culprits, *held)
    alone = {n: c.alone_snr_db for c in measured for n in c.nodes}
    gain = {n: c.gain_db for c in measured for n in c.nodes}
    samples = {n: c.samples for c in measured for n in c.nodes if c.samples}
    out = layers.copy()
    out["rank"] = out["node"].map(rank).astype("Int64")
    out["alone_snr_db"] = out["node"].map(alone).astype(float)
    out["gain_db"] = out["node"].map(gain).astype(float)
    out["ranked_on"] = out["node"].map(samples).astype("Int64")
    return out


def summarize(lw: LayerwiseRun, view: GraphView, cfg: RunConfig, *, fp16_nodes: tuple[str, ...], backend_note: str,
              ranking: HarmRanking | None, ranking_reused: bool, timings: dict[str, float], recalibrated: bool,
              warnings: tuple[str, ...]) -> Summary:
    culprits, held = _culprits(lw.layers, ranking, view, cfg.quant.fallback)
    outputs = {o: OutputMetrics(o, s, lw.marked_outputs[o].snr_db if o in lw.marked_outputs else math.nan)
               for o, s in lw.outputs.items()}
    notes = list(warnings)
    for o, m in outputs.items():
        if m.fusion_disagrees:
            notes.append(f"Output '{o}' has SNR {m.snr_db:.1f} dB in the unmodified candidate but {m.marked_run_snr_db:.1f} dB "
                         "with every tensor marked: marking outputs changed fusion, so trust the unmodified figure.")
    notes.extend(split.sentence() for split in lw.channel_splits if split.hides)
    if lw.shape_mismatches:
        notes.append(f"{len(lw.shape_mismatches)} tensor(s) differ in shape between reference and candidate and were not compared.")
    headline = _headline(culprits, ranking, lw.layers, cfg.quant.fallback, outputs_together(outputs, lw.float_outputs), lw.samples,
                         cfg.quant.precision.label, cfg.screen_samples)
    if lw.input_independent:  # no ranking or SNR of such a model says anything about its quantization
        headline = (f"The FP32 model gives the same outputs for all {lw.samples} samples: it ignores its input (weights "
                    "that are all one constant, or not trained?), so this comparison cannot tell its layers apart. "
                    "Load the model with its trained weights.")
        notes.insert(0, headline)
    info = (RankingInfo("measured harm", ranking.samples, ranking.probes, ranking.all_int8_snr_db, ranking_reused, ranking.view,
                        dict(ranking.top_set_gain_db or {}), ranking.plan, ranking.seconds, ranking.work,
                        ranking.first_stage_error_db)
            if ranking is not None else RankingInfo("introduced noise", 0, 0, math.nan))
    return Summary(
        model=cfg.model, backend=cfg.backend, backend_note=backend_note, samples=lw.samples, batches=lw.batches,
        batch_size=cfg.batch_size, outputs=outputs, task=lw.task, culprits=culprits, headline=headline,
        fallback=tuple(in_name_order(cfg.quant.fallback)), fallback_precision=cfg.quant.fallback_precision, fp16_nodes=fp16_nodes,
        quantized_nodes=len(view.quantized_nodes - cfg.quant.fallback), config=cfg.quant, timings=timings, ranking=info,
        amplifiers=_amplifiers(lw.layers, view, cfg.quant.fallback),
        not_observable=view.missing_in_candidate + lw.unobservable + lw.shape_mismatches, warnings=tuple(notes),
        recalibrated=recalibrated, unmodified_candidate_batches=lw.unmodified_batches, passes=lw.passes,
        engine=lw.artifacts.get("engine"), model_sha256=cfg.model_sha256, data_sha256=cfg.data_sha256,
        channel_splits=lw.channel_splits, held=held, float_outputs=lw.float_outputs,
    )
