"""Small read-only views of a run folder that the dashboard and the report show beside the ranking.

quantized_readers(): the nodes that read a quantized (dequantized) tensor but are not fallback candidates, e.g. an Add
on a residual branch whose other input is the quantized input of a Conv. They run in float, so ticking them would
change nothing, but they are why "nodes next to Q/DQ" outnumber the fallback candidates.
run_neighbourhood(): engine.neighbourhood for a node of a run folder's result."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnx
import pandas as pd

from engine.compare.graph import observe
from engine.node_view import Neighbourhood, neighbourhood
from engine.run_config import RunConfig
from engine.runs import RunFolder

__all__ = ["QuantizedReader", "quantized_readers", "run_neighbourhood"]


@dataclass(frozen=True)
class QuantizedReader:
    node: str
    op_type: str
    source: str  # the node whose output it reads through a Q/DQ pair (or the graph input's name)
    tensor: str

    @property
    def sentence(self) -> str:
        return (f"{self.node} ({self.op_type}) reads {self.source}'s output {self.tensor} after its Q/DQ pair, "
                "but runs in float itself")


def quantized_readers(run_dir: str | os.PathLike, files_dir: str | os.PathLike | None = None) -> tuple[QuantizedReader, ...]:
    """Nodes reading a dequantized tensor that are not fallback candidates, in graph order. `files_dir`: the folder of the
    result's candidate.onnx (a history/N folder for an earlier build; default the run folder)."""
    run = RunFolder(run_dir)
    config: RunConfig = run.read_config()
    reference = onnx.load(run.reference, load_external_data=False)
    candidate = onnx.load(Path(files_dir or run.path) / "candidate.onnx", load_external_data=False)
    view = observe(reference, candidate, config.quant.op_types)
    producer = {o: n.name for n in reference.graph.node for o in n.output}
    q_source = {n.output[0]: n.input[0] for n in candidate.graph.node if n.op_type == "QuantizeLinear"}
    dq_source = {n.output[0]: q_source.get(n.input[0]) for n in candidate.graph.node if n.op_type == "DequantizeLinear"}
    found = []
    for n in candidate.graph.node:
        if n.name not in view.reads_quantized:
            continue
        tensor = next((dq_source[i] for i in n.input if dq_source.get(i)), None)
        if tensor is not None:
            found.append(QuantizedReader(n.name, n.op_type, producer.get(tensor, tensor), tensor))
    return tuple(found)


def run_neighbourhood(run_dir: str | os.PathLike, layers: pd.DataFrame, node: str, hops: int = 1,
                      files_dir: str | os.PathLike | None = None) -> Neighbourhood:
    run = RunFolder(run_dir)
    reference = onnx.load(run.reference, load_external_data=False)
    candidate = onnx.load(Path(files_dir or run.path) / "candidate.onnx", load_external_data=False)
    return neighbourhood(reference, candidate, layers, node, hops=hops)
