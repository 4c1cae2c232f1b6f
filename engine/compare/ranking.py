"""Where error is introduced: per node, the noise power it adds relative to its output's signal power.

introduced_db = 10 log10(max(NSR_out - max_i NSR_in_i, 1e-12)), NSR = 10^(-snr_db/10). Exact tensors
(graph inputs, initializers, anything not observed) have NSR 0. NSRs are subtracted as powers, never
SNRs in dB: an exact input has infinite SNR and would make every first quantized node look infinitely
guilty."""

from __future__ import annotations

import math

import pandas as pd

from engine.compare.graph import ObservedTensor

__all__ = ["nsr", "introduced_db", "rank_culprits", "FLOOR_DB"]

FLOOR_DB = -120.0


def nsr(snr: float) -> float:
    if math.isnan(snr):
        return 0.0
    if snr == math.inf:
        return 0.0
    if snr == -math.inf:
        return math.inf
    return 10.0 ** (-snr / 10.0)


def introduced_db(tensors: tuple[ObservedTensor, ...], snr_by_tensor: dict[str, float]) -> dict[str, float]:
    out = {}
    for t in tensors:
        n_out = nsr(snr_by_tensor[t.tensor])
        n_in = max((nsr(snr_by_tensor[i]) for i in t.node_inputs if i in snr_by_tensor), default=0.0)
        added = n_out - n_in if math.isfinite(n_out) else 1e12
        out[t.tensor] = 10.0 * math.log10(max(added, 1e-12)) if math.isfinite(added) else FLOOR_DB
    return out


def input_snr(t: ObservedTensor, snr_by_tensor: dict[str, float]) -> float:
    """The worst SNR among the node's observed inputs (inf when all are exact)."""
    return min((snr_by_tensor[i] for i in t.node_inputs if i in snr_by_tensor), default=math.inf)


def rank_culprits(layers: pd.DataFrame) -> pd.DataFrame:
    """One row per node (its worst output), nodes that add any noise, highest introduced_db first."""
    per_node = layers.sort_values("introduced_db", ascending=False).drop_duplicates("node")
    per_node = per_node[per_node["introduced_db"] > FLOOR_DB]
    return per_node.sort_values(["introduced_db", "order"], ascending=[False, True]).reset_index(drop=True)
