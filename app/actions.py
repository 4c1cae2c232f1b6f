"""What the pages do, kept out of the page scripts: run the engine with a progress bar, keep history."""

from __future__ import annotations

import json
import time
from pathlib import Path

import streamlit as st

import engine
from app import state
from app.workspace import new_run_dir

__all__ = ["sample_catalog", "sample_inputs", "run_comparison", "run_rebuild", "history_entry", "progress_bar"]

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


def error_sentence(err: Exception) -> str:
    return str(err) if isinstance(err, engine.QuantScopeError) else engine.unexpected_error_sentence(err)


def sample_catalog() -> dict:
    return json.loads((SAMPLES / "catalog.json").read_text())


def sample_inputs(name: str) -> dict:
    entry = sample_catalog()["models"][name]
    return {"name": name, "model": str(SAMPLES / entry["file"]), "calib": str(SAMPLES / entry["calibration"]),
            "data": str(SAMPLES / entry["evaluation"]), "labels": str(SAMPLES / entry["labels"]), "images": None, "sample": True}


def progress_bar():
    """A progress callback drawing one bar with the stage, counts and the engine's estimate."""
    bar = st.progress(0.0, text="starting")
    started = time.perf_counter()

    def callback(ev: engine.ProgressEvent) -> None:
        bar.progress(ev.fraction, text=f"{ev.stage}: {ev.message} ({time.perf_counter() - started:.0f} s)")

    return bar, callback


def history_entry(result: engine.ComparisonResult, kind: str) -> dict:
    s = result.summary
    out = result.final_output()
    return {
        "run": len(st.session_state[state.HISTORY]) + 1, "kind": kind, "model": s.model, "run_dir": str(result.run_dir),
        "calibration": s.config["calibration"], "op_types": ", ".join(s.config["op_types"]), "batch": s.batch_size,
        "backend": s.backend, "fallback": ", ".join(s.fallback) or "-", "fallback_nodes": len(s.fallback),
        "cosine": out.cosine, "snr_db": out.snr_db, "top1_agreement": s.task.get("top1_agreement"),
        "accuracy": s.task.get("candidate_accuracy"), "top_culprit": s.culprits[0].node if s.culprits else "-",
        "layers_csv": str(result.run_dir / "layers.csv"),
    }


def run_comparison(inputs: dict, config: engine.QuantConfig, batch: int, provider: str) -> engine.ComparisonResult | None:
    """Runs compare; on a QuantScopeError shows its sentence and keeps the previous result."""
    st.session_state[state.RUN_COUNTER] += 1
    out = new_run_dir(st.session_state[state.SESSION_ID], st.session_state[state.RUN_COUNTER])
    bar, callback = progress_bar()
    try:
        result = engine.compare(inputs["model"], inputs["calib"], data=inputs.get("data"), labels=inputs.get("labels"),
                                config=config, batch_size=batch, provider=provider, images=inputs.get("images"),
                                model_name=inputs["name"], out_dir=out, progress=callback)
    except Exception as err:  # noqa: BLE001 - the engine's sentence, or one for the unexpected; never a traceback
        bar.empty()
        st.error(error_sentence(err))
        return None
    bar.progress(1.0, text="done")
    st.session_state[state.RESULT] = result
    st.session_state[state.BEFORE] = None
    st.session_state[state.FALLBACK] = set(result.summary.fallback)
    st.session_state[state.HISTORY].append(history_entry(result, "compare"))
    return result


def run_rebuild(fallback: set[str]) -> engine.ComparisonResult | None:
    current: engine.ComparisonResult = st.session_state[state.RESULT]
    before_layers = current.layers.copy()
    bar, callback = progress_bar()
    try:
        result = engine.rebuild(current.run_dir, fallback=sorted(fallback), progress=callback)
    except Exception as err:  # noqa: BLE001
        bar.empty()
        st.error(error_sentence(err))
        return None
    bar.progress(1.0, text="done")
    st.session_state[state.BEFORE] = engine.ComparisonResult(current.run_dir, before_layers, current.summary)
    st.session_state[state.RESULT] = result
    st.session_state[state.HISTORY].append(history_entry(result, "rebuild"))
    return result
