"""Engine reads the pages repeat on every rerun, cached (st.cache_data) by file identity: path, size and mtime, so a
changed file is read again and an unchanged one never is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

import engine
from engine import QuantizedReader, quantized_readers, run_neighbourhood

__all__ = ["ModelFacts", "model_facts", "data_digest", "content_key", "readers", "neighbourhood", "tensor_view", "report", "stamp"]


def stamp(path: str | os.PathLike) -> tuple[str, int, int]:
    """What identifies a file's content for a cache: its path, size and modification time."""
    st_ = Path(path).stat()
    return str(path), st_.st_size, st_.st_mtime_ns


@dataclass(frozen=True)
class ModelFacts:
    info: engine.ModelInfo
    quantizable: tuple[str, ...]  # nodes of the default INT8 op types, named as in the file ('#index Op' if unnamed)
    digest: str  # the model's content digest, as a run's summary records it (Summary.model_sha256)


@st.cache_data(show_spinner=False, max_entries=32)
def _model_facts(key: tuple) -> ModelFacts:
    proto = engine.load_model(key[0])
    names = tuple(n.name or f"#{i} {n.op_type}" for i, n in enumerate(proto.graph.node) if n.op_type in engine.TRT_INT8_OP_TYPES)
    return ModelFacts(engine.model_info(proto), names, engine.model_digest(proto))


@st.cache_data(show_spinner=False, max_entries=32)
def _data_digest(key: tuple, model_key: tuple, images: engine.ImagePreprocess | None) -> str:
    try:
        return engine.load_data(key[0], _model_facts(model_key).info, images=images).content_digest() or ""
    except engine.QuantScopeError:
        return ""


def data_digest(model: str, data: str, images: engine.ImagePreprocess | None) -> str:
    """The samples' content digest as a run's summary records it (Summary.data_sha256); "" where it is not known cheaply
    (an image folder) or the files cannot be read."""
    return _data_digest(stamp(data), stamp(model), images)


@st.cache_data(show_spinner=False, max_entries=8)
def _content_key(_inputs, stamps: tuple, images: str) -> tuple[tuple[str, str], ...]:
    return _inputs.content_key()


def content_key(inputs) -> tuple[tuple[str, str], ...]:
    """Inputs.content_key, hashed once per version of the files."""
    return _content_key(inputs, tuple(stamp(p) for p in (inputs.model, inputs.calib, inputs.data, inputs.labels) if p),
                        repr(inputs.images))


def model_facts(path: str) -> ModelFacts:
    """Parses and checks a model once per file version (raises engine errors, which are not cached)."""
    return _model_facts(stamp(path))


def model_op_types(path: str | None) -> list[str]:
    """The op types in the model at `path`, sorted; none where there is no model or it cannot be read (the Load page
    has said why)."""
    if path is None:
        return []
    try:
        return sorted(model_facts(path).info.op_histogram)
    except engine.QuantScopeError:
        return []


def model_fixed_batch(path: str | None) -> int | None:
    """The batch size the model at `path` fixes on axis 0; None where it is dynamic or the model cannot be read."""
    if path is None:
        return None
    try:
        return model_facts(path).info.fixed_batch
    except engine.QuantScopeError:
        return None


@st.cache_data(show_spinner=False, max_entries=16)
def _readers(key: tuple, run_dir: str) -> tuple[QuantizedReader, ...]:
    return quantized_readers(run_dir, Path(key[0]).parent)


def readers(result: engine.ComparisonResult) -> tuple[QuantizedReader, ...]:
    return _readers(stamp(result.files / "candidate.onnx"), str(result.run_dir))


@st.cache_data(show_spinner=False, max_entries=64)
def _neighbourhood(key: tuple, run_dir: str, _layers: pd.DataFrame, node: str, hops: int) -> engine.Neighbourhood:
    return run_neighbourhood(run_dir, _layers, node, hops, Path(key[0]).parent)


def neighbourhood(result: engine.ComparisonResult, node: str, hops: int) -> engine.Neighbourhood:
    return _neighbourhood(stamp(result.files / "candidate.onnx"), str(result.run_dir), result.layers, node, hops)


@st.cache_data(show_spinner=False, max_entries=64)
def _tensor_view(key: tuple, run_dir: str, node: str) -> engine.TensorView:
    return engine.tensor_view(run_dir, node)


def tensor_view(result: engine.ComparisonResult, node: str) -> engine.TensorView:
    """The run folder's current build (tensor_view reads its candidate.onnx and config.json)."""
    return _tensor_view(stamp(Path(result.run_dir) / "candidate.onnx"), str(result.run_dir), node)


@st.cache_data(show_spinner=False, max_entries=8)
def _report(key: tuple, _build) -> str:
    return _build()


def report(key: tuple, build) -> str:
    """The HTML report, built once per (result version, before version, command)."""
    return _report(key, build)
