"""Which node(s) of the user's file each node of the prepared graph came from.

Pre-processing rewrites a graph: BatchNormalization folds into the Conv before it, constants fold, an opset upgrade
or an optimizer may expand one op into several (HardSwish into HardSigmoid and Mul), and unnamed nodes get generated
names. A user looks for the names (or, where the file has none, the position) of their own file, so every prepared
node carries its origins, matched by what survives a rewrite:
  1. the same node name (a node the file named, or our generated name for an unnamed one, kept by the rewrite), or that
     name with a fusion's suffix: ONNX Runtime names a fused node '<first node>/<Kind>Fusion' (MatMul.0/MatMulAddFusion);
  2. the same output tensor name (a fused node writes the tensor of the node it absorbed: Conv takes BN's output);
  3. for a node the rewrite created with new tensors, the origins of the nearest nodes it feeds (or is fed by)."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

__all__ = ["Origin", "provenance", "origin_text", "resolve_node"]


@dataclass(frozen=True)
class Origin:
    index: int  # position in the user's file
    name: str  # the name in the user's file ("" if it had none)
    op_type: str

    @property
    def label(self) -> str:
        return self.name if self.name else f"#{self.index} {self.op_type}"

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "op_type": self.op_type}

    @classmethod
    def from_dict(cls, d: dict) -> Origin:
        return cls(int(d["index"]), str(d["name"]), str(d["op_type"]))


def provenance(original: onnx.ModelProto, named: onnx.ModelProto, prepared: onnx.ModelProto) -> dict[str, tuple[Origin, ...]]:
    """original: the user's file; named: the same graph after naming its unnamed nodes (same node order); prepared: the
    graph compared. Returns, for every prepared node, its origins in the user's file (in file order)."""
    origins = [Origin(i, n.name, n.op_type) for i, n in enumerate(original.graph.node)]
    by_name = {n.name: origins[i] for i, n in enumerate(named.graph.node) if n.name}
    by_output = {o: origins[i] for i, n in enumerate(named.graph.node) for o in n.output if o}
    found: dict[str, set[Origin]] = {}
    for node in prepared.graph.node:
        mine = set()
        if node.name in by_name:
            mine.add(by_name[node.name])
        first, _, kind = node.name.rpartition("/")
        if kind.endswith("Fusion") and first in by_name:
            mine.add(by_name[first])
        mine.update(by_output[o] for o in node.output if o in by_output)
        found[node.name] = mine
    producers = {o: n for n in prepared.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in prepared.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # a rewrite's new nodes borrow the origins of the nodes they feed, and only where none has any, of the nodes feeding
    # them: a Flatten the opset upgrade put before a Softmax took the MatMul before it as its origin, when it was visited
    # before the Softmax had its own
    for neighbours in ("consumers", "producers"):
        for _ in range(len(prepared.graph.node)):
            changed = False
            for node in prepared.graph.node:
                if found[node.name]:
                    continue
                if neighbours == "consumers":
                    near = {o for out in node.output for c in consumers.get(out, ()) for o in found[c.name]}
                else:
                    near = {o for i in node.input if i in producers for o in found[producers[i].name]}
                if near:
                    found[node.name] = near
                    changed = True
            if not changed:
                break
    return {k: tuple(sorted(v, key=lambda o: o.index)) for k, v in found.items()}


def origin_text(origins: tuple[Origin, ...]) -> str:
    return ", ".join(o.label for o in origins)


def resolve_node(name: str, prov: dict[str, tuple[Origin, ...]], candidates: set[str]) -> list[str]:
    """Prepared node names for `name`: itself if it is one, else the candidates that came from an original node of that
    name (or '#index'), e.g. the Conv a Conv+BatchNormalization pair of the file became."""
    if name in prov:
        return [name]
    return [p for p, origins in prov.items() if p in candidates and any(name in (o.name, f"#{o.index}") for o in origins)]
