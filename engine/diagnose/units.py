"""Fallback units: single nodes, or groups that TensorRT fuses and that should fall back together."""

from __future__ import annotations

from enum import Enum

import onnx

from engine.errors import ConfigError

__all__ = ["UnitMode", "fallback_units"]

ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu"})


class UnitMode(str, Enum):
    NODE = "node"
    RESIDUAL = "residual"  # a residual Add with the quantized nodes feeding it
    ACTIVATION = "activation"  # a quantized node with the activation fused after it

    @classmethod
    def parse(cls, text: str) -> UnitMode:
        try:
            return cls(text.lower())
        except ValueError:
            raise ConfigError(f"Unknown unit mode '{text}'; use node, residual or activation.") from None


def fallback_units(reference: onnx.ModelProto, quantizable: tuple[str, ...], mode: UnitMode) -> list[tuple[str, ...]]:
    """Units in topological order; every quantizable node is in exactly one unit."""
    nodes = list(reference.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    qset = set(quantizable)
    grouped: dict[str, tuple[str, ...]] = {}
    if mode is UnitMode.RESIDUAL:
        for n in nodes:
            if n.op_type == "Add":
                feeders = tuple(sorted({producer[i].name for i in n.input if i in producer and producer[i].name in qset}))
                if len(feeders) >= 1 and not any(f in grouped for f in feeders):
                    unit = (*feeders, n.name)
                    for f in feeders:
                        grouped[f] = unit
    elif mode is UnitMode.ACTIVATION:
        for n in nodes:
            if n.name in qset and len(n.output) == 1:
                after = consumers.get(n.output[0], [])
                if len(after) == 1 and after[0].op_type in ACTIVATIONS:
                    grouped[n.name] = (n.name, after[0].name)
    units, seen = [], set()
    for name in quantizable:
        unit = grouped.get(name, (name,))
        if unit not in seen:
            seen.add(unit)
            units.append(unit)
    return units
