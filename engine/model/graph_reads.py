"""Which tensor names a graph reads, subgraphs (If / Loop / Scan bodies) included, and pruning what nothing reads."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

import onnx

__all__ = ["subgraphs", "names_read", "node_reads", "drop_unread_qdq", "nested_op_counts"]

QDQ = ("QuantizeLinear", "DequantizeLinear")


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def names_read(graph: onnx.GraphProto) -> set[str]:
    """Every name a node of `graph` or of any subgraph in it reads, and the graph's outputs (a subgraph may read a
    tensor or initializer of the enclosing graph by name)."""
    read = {o.name for o in graph.output}
    stack = [graph]
    while stack:
        g = stack.pop()
        for n in g.node:
            read.update(n.input)
            stack.extend(subgraphs(n))
        read.update(o.name for o in g.output)
    return read


def node_reads(node: onnx.NodeProto) -> set[str]:
    """The names a node reads from its graph: its inputs and, for If / Loop / Scan, what its bodies read from outside
    themselves (names a body defines, its inputs, initializers and node outputs, are its own)."""
    reads = {i for i in node.input if i}
    for sub in subgraphs(node):
        local = {i.name for i in sub.initializer} | {i.name for i in sub.input}
        for n in sub.node:
            reads.update(r for r in node_reads(n) if r not in local)
            local.update(n.output)
        reads.update(o.name for o in sub.output if o.name not in local)
    return reads


def nested_op_counts(graph: onnx.GraphProto, op_types: Iterable[str]) -> Counter[str]:
    """How many nodes of `op_types` sit inside the subgraphs of `graph`'s nodes (at any depth), by op type."""
    wanted, found = set(op_types), Counter[str]()
    stack = [sub for n in graph.node for sub in subgraphs(n)]
    while stack:
        g = stack.pop()
        for n in g.node:
            if n.op_type in wanted:
                found[n.op_type] += 1
            stack.extend(subgraphs(n))
    return found


def drop_unread_qdq(model: onnx.ModelProto) -> None:
    """Q/DQ nodes of the main graph whose outputs nothing reads, then initializers nothing reads, removed."""
    g = model.graph
    while True:
        read = names_read(g)
        dead = [n for n in g.node if n.op_type in QDQ and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    read = names_read(g)
    keep = [i for i in g.initializer if i.name in read]
    del g.initializer[:]
    g.initializer.extend(keep)
