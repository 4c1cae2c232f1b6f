"""A key for every tensor of a graph that changes whenever anything that computes the tensor changes: its node's op type
and attributes, and the keys of its inputs, down to the graph inputs and the initializers' bytes. Two builds of a model
that give a tensor the same key compute it the same way, so where the backend repeats itself bit for bit
(Capabilities.repeatable), its metrics from the earlier build hold for the later one. A rebuild that falls back a node
of a detector's head changes only the tensors after it: the backbone's metrics need not be computed again."""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

import onnx
import pandas as pd

from engine.compare.metrics import METRIC_COLUMNS, TensorStats

__all__ = ["tensor_keys", "key_salt", "reusable_stats", "KEY_COLUMN"]

KEY_COLUMN = "measured_key"  # layers.csv: the key each row's metrics were measured under ("" where none)


def _digest(*parts: bytes | str) -> str:
    h = hashlib.blake2b(digest_size=12)
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def tensor_keys(model: onnx.ModelProto, salt: str) -> dict[str, str]:
    """Tensor name -> key, for every tensor a node of the main graph writes. `salt` names what else the values depend
    on (the backend, the batches). A node with a subgraph (If, Loop) reads tensors its attributes do not name, so its
    outputs, and everything after them, get keys that match nothing."""
    g = model.graph
    keys: dict[str, str] = {}
    for v in g.input:
        keys[v.name] = _digest("input", salt, v.SerializeToString())
    for init in g.initializer:
        keys[init.name] = _digest("initializer", init.SerializeToString())
    for node in g.node:
        opaque = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        inputs = [keys.get(i) if i else "" for i in node.input]
        if opaque or any(k is None for k in inputs):  # an input from an outer scope, or no graph order: never the same
            base = secrets.token_hex(12)
        else:
            base = _digest("node", salt, node.domain, node.op_type, *(a.SerializeToString() for a in node.attribute),
                           *[k or "" for k in inputs])
        for i, out in enumerate(node.output):
            if out:
                keys[out] = _digest(base, str(i))
    return keys


def key_salt(backend_name: str, batches: str | None) -> str | None:
    """What a tensor's metrics depend on besides the graph: the backend and the cached batches (ReferenceCache.generation).
    None where the batches have no name (a cache written before it was kept): nothing is reused then."""
    return f"{backend_name}|{batches}" if batches else None


def reusable_stats(layers_csv: Path, keys: Mapping[str, str], names: Iterable[str]) -> dict[str, TensorStats]:
    """Of `names`, the tensors whose row in an earlier layers.csv was measured under the same key: their metrics, read
    back exactly (round-trip floats). A row without a key, with another key or without numbers is measured again."""
    try:
        columns = ["tensor", KEY_COLUMN, *METRIC_COLUMNS]
        # pandas 3 reads floats back exactly by default (its float_precision="round_trip" is deprecated for that reason)
        rows = pd.read_csv(layers_csv, usecols=columns, dtype={"tensor": str, KEY_COLUMN: str})[columns]
    except (OSError, ValueError):  # no earlier results, or written before keys were kept
        return {}
    wanted = set(names)
    out: dict[str, TensorStats] = {}
    for row in rows.itertuples(index=False):
        t, key = row[0], row[1]
        values = dict(zip(METRIC_COLUMNS, (float(v) for v in row[2:])))
        if t in wanted and isinstance(key, str) and keys.get(t) == key and not math.isnan(values["snr_db"]):
            out[t] = TensorStats(values, 0)  # elements: not kept in layers.csv, and nothing reads them for a layer
    return out
