"""Load: the bundled sample (default, zero uploads) or an uploaded model and data; a summary of the inputs in use."""

from __future__ import annotations

import shutil

import pandas as pd
import streamlit as st

import engine
from app import state
from app.actions import busy, show_error
from app.cached import model_facts
from app.inputs import Inputs
from app.plots import op_type_figure
from app.samples import catalog, default_name, sample_inputs
from app.workspace import discard_upload_sets, new_upload_set, save_upload

st.title("Load a model and calibration data")
MAX_MB = int(st.get_option("server.maxUploadSize"))  # passed to every uploader, so its drop zone states the same limit
ROLE_KEYS = {"model": "up_model", "calib": "up_calib", "data": "up_eval", "labels": "up_labels"}

SOURCES = ["Bundled sample", "Upload"]
# The radio's own state is dropped when another page runs, so its choice lives in a key of ours: coming back to
# this page must never swap uploaded inputs for the sample.
source = st.radio("Source", SOURCES, horizontal=True, key="load_source",
                  index=SOURCES.index(st.session_state.get(state.LOAD_SOURCE, SOURCES[0])))
st.session_state[state.LOAD_SOURCE] = source


def _picked(role: str) -> None:
    """A file chosen (or removed) in an uploader: remembered as pending until "Use these files" applies it."""
    pending = st.session_state.setdefault(state.PENDING_UPLOAD, {})
    # a new attempt: the refusal's error is gone from the page, and "see the error above" pointed at nothing (trial);
    # the refused attempt's other files, still chosen, are part of it (the page named only the new model)
    if st.session_state.pop(state.LOAD_FAILED, None):
        pending.update({r: f.name for r, key in ROLE_KEYS.items() if (f := st.session_state.get(key)) is not None})
    chosen = st.session_state.get(ROLE_KEYS[role])
    if chosen is None:
        pending.pop(role, None)
    else:
        pending[role] = chosen.name


def _numbers(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _is_numbers(text: str) -> bool:
    try:
        _numbers(text)
        return True
    except ValueError:
        return False


def loaded_sentence(model: str, calib_samples: int, eval_samples: int, data: str | None, labels: str | None,
                    class_scores: bool | None) -> str:
    """What "Use these files" applied, every file named: the labels went unmentioned, so a user could not tell whether
    accuracy would be measured (it is only where an output holds N x classes scores)."""
    evaluation = (f"{eval_samples} evaluation samples from {data}" if data else
                  f"evaluation on the same {eval_samples} samples")
    if labels is None:
        scored = "no labels, so outputs are compared without accuracy"
    elif class_scores is False:
        scored = f"labels from {labels}, but no output is N x classes scores, so accuracy is not measured"
    else:
        scored = f"labels from {labels}, so accuracy is measured" + (" if an output is N x classes scores" if class_scores is None else " too")
    return f"Loaded {model} with {calib_samples} calibration samples, {evaluation}, and {scored}."


def _apply_upload(files: dict, images: engine.ImagePreprocess | None) -> None:
    """Validates the chosen files in a new upload set and makes them the inputs; on failure the inputs in use stay."""
    sid = st.session_state[state.WORKSPACE]
    upload_set = None
    try:
        upload_set = new_upload_set(sid)
        with st.spinner("Checking the model and data (nothing uploaded is executed)..."):
            model_bytes = files["model"].getvalue()
            info = engine.model_info(engine.load_model_bytes(model_bytes, name=f"'{files['model'].name}'"))
            paths = {"model": save_upload(upload_set, "model", files["model"].name, model_bytes)}
            paths["calib"] = save_upload(upload_set, "calib", files["calib"].name, files["calib"].getvalue())
            calib = engine.load_data(paths["calib"], info, images=images, what=f"'{files['calib'].name}'")
            n = calib.num_samples
            if files.get("data") is not None:
                paths["data"] = save_upload(upload_set, "eval", files["data"].name, files["data"].getvalue())
                n = engine.load_data(paths["data"], info, images=images, what=f"'{files['data'].name}'").num_samples
            if files.get("labels") is not None:
                paths["labels"] = save_upload(upload_set, "labels", files["labels"].name, files["labels"].getvalue())
                engine.load_labels(paths["labels"], n, what=f"'{files['labels'].name}'")
    except (engine.QuantScopeError, OSError) as err:  # OSError: the disk is full or the runs root unwritable
        if upload_set is not None:
            shutil.rmtree(upload_set, ignore_errors=True)
        sentence = str(err) if isinstance(err, engine.QuantScopeError) else engine.unexpected_error_sentence(err)
        st.session_state[state.LOAD_FAILED] = sentence
        st.session_state.pop(state.PENDING_UPLOAD, None)  # tried and refused: no longer waiting to be applied
        show_error(sentence, getattr(err, "option", None), slots)
        return
    if not busy():  # a queued or running comparison may still read the previous files
        discard_upload_sets(sid, keep=upload_set)
    st.session_state[state.INPUTS] = Inputs(
        name=files["model"].name, model=str(paths["model"]), calib=str(paths["calib"]),
        data=str(paths["data"]) if "data" in paths else None, labels=str(paths["labels"]) if "labels" in paths else None,
        images=images, sample=False, uploaded_as=tuple((role, files[role].name) for role in paths))
    st.session_state.pop(state.PENDING_UPLOAD, None)
    st.session_state.pop(state.LOAD_FAILED, None)
    st.success(loaded_sentence(files["model"].name, calib.num_samples, n,
                               files["data"].name if files.get("data") is not None else None,
                               files["labels"].name if files.get("labels") is not None else None, info.class_scores()))


slots: dict = {}
if source == "Bundled sample":
    models = catalog()["models"]
    names = list(models)
    name = st.selectbox("Sample model", names, index=names.index(default_name()), key="load_sample",
                        format_func=lambda n: f"{n} (FP32 accuracy {models[n]['fp32_accuracy']:.1%})")
    st.caption(models[name]["description"])
    current = st.session_state.get(state.INPUTS)
    if current is None or current.name != name or not current.sample:
        st.session_state[state.INPUTS] = sample_inputs(name)
    st.session_state.pop(state.PENDING_UPLOAD, None)
    st.session_state.pop(state.LOAD_FAILED, None)
else:
    limit = f"{MAX_MB // 1024} GB" if MAX_MB % 1024 == 0 else f"{MAX_MB} MB"  # as the drop zones below write it
    st.caption(f"Each file may be up to {limit} (the server's server.maxUploadSize). Nothing uploaded is executed: arrays load "
               "without pickle, zips are checked before they are read.")
    files = {
        "model": st.file_uploader("ONNX model (.onnx, a single file)", type=["onnx"], key="up_model", on_change=_picked, args=("model",),
                                  max_upload_size=MAX_MB),
        "calib": st.file_uploader("Calibration data (.npz, .npy, Polygraphy inputs .json, or a .zip of images)",
                                  type=["npz", "npy", "json", "zip"], key="up_calib", on_change=_picked, args=("calib",),
                                  max_upload_size=MAX_MB),
        "data": st.file_uploader("Evaluation data (optional, same formats; default: the calibration data)",
                                 type=["npz", "npy", "json", "zip"], key="up_eval", on_change=_picked, args=("data",),
                                 max_upload_size=MAX_MB),
        "labels": st.file_uploader("Labels for the evaluation data (optional, .npy of integers)", type=["npy"], key="up_labels",
                                   on_change=_picked, args=("labels",), max_upload_size=MAX_MB),
    }
    pending = st.session_state.get(state.PENDING_UPLOAD, {})
    lost = {role: n for role, n in pending.items() if files[role] is None}
    if lost:  # chosen earlier, then the page was left: the browser no longer holds them
        st.warning(f"The file(s) you chose earlier ({', '.join(lost.values())}) were never applied and are no longer held "
                   "here; choose them again and click Use these files.")
        for role in lost:
            pending.pop(role)
    with st.expander("Image preprocessing (for .zip image folders)", expanded=any(
            f is not None and f.name.lower().endswith(".zip") for f in (files["calib"], files["data"]))):
        st.caption("Each image is resized (shorter side), centre-cropped, then (pixel × scale − mean) / std per channel. "
                   "Auto reads the layout, colour order and size from the model's input.")
        c1, c2, c3, c4 = st.columns(4)
        layout = c1.selectbox("Layout", ["auto", "NCHW", "NHWC"], key="pre_layout")
        color = c2.selectbox("Colour order", ["auto", "RGB", "BGR", "GRAY"], key="pre_color")
        height = c3.number_input("Height (0 = model's)", min_value=0, max_value=8192, value=0, key="pre_height")
        width = c4.number_input("Width (0 = model's)", min_value=0, max_value=8192, value=0, key="pre_width")
        c1, c2, c3 = st.columns(3)
        scale = c1.number_input("Scale", value=1 / 255, format="%.8f", key="pre_scale")
        mean = c2.text_input("Mean (comma-separated)", "0", key="pre_mean", help="e.g. 0.485,0.456,0.406 for ImageNet")
        std = c3.text_input("Std (comma-separated)", "1", key="pre_std", help="e.g. 0.229,0.224,0.225 for ImageNet")
        slots = {"mean": c2.empty(), "std": c3.empty(), "images": st.empty()}
    ready = files["model"] is not None and files["calib"] is not None
    if st.button("Use these files", type="primary", disabled=not ready,
                 help=None if ready else "Choose a model and calibration data first."):
        bad = next((what for what, text in (("mean", mean), ("std", std)) if not _is_numbers(text)), None)
        if bad is not None:
            slots[bad].error(f"The {bad} must be comma-separated numbers, e.g. 0.485,0.456,0.406.")
        else:
            try:
                images = engine.ImagePreprocess(height=int(height) or None, width=int(width) or None,
                                                layout=None if layout == "auto" else layout,
                                                color=None if color == "auto" else color, scale=float(scale),
                                                mean=_numbers(mean), std=_numbers(std))
            except engine.QuantScopeError as err:
                slots["images"].error(str(err))
            else:
                _apply_upload(files, images)
    elif pending:
        # the button is disabled until both are chosen: 'Click Use these files' pointed at a button that could not be
        # clicked, its reason only in a tooltip (browser trial)
        need = " and ".join(w for w, f in (("a model", files["model"]), ("calibration data", files["calib"])) if f is None)
        then = f"Choose {need} too, then click Use these files" if need else "Click Use these files to check and use them"
        st.info(f"Chosen but not applied yet: {', '.join(pending.values())}. {then}; until then the inputs below stay in use.")


inputs: Inputs | None = st.session_state.get(state.INPUTS)
if inputs is None:
    st.info("No inputs yet: choose a model and calibration data above and click Use these files.")
else:
    try:
        facts = model_facts(inputs.model)
    except engine.QuantScopeError as err:
        st.error(str(err))
    else:
        info = facts.info
        kind = "bundled sample" if inputs.sample else "uploaded"
        failed = st.session_state.get(state.LOAD_FAILED)
        st.subheader(f"Model: {inputs.name}")
        if failed:
            st.warning(f"In use, unchanged: {inputs.name} ({kind}). The files you tried were not applied (see the error above).")
        elif source == "Upload" and inputs.sample:
            st.warning(f"No upload has been applied yet, so the inputs in use are still the bundled sample {inputs.name}; "
                       "Compare will not run until you apply files here or switch Source back to Bundled sample.")
        c1, c2, c3 = st.columns(3)
        c1.metric("Nodes", info.node_count)
        c2.metric("Opset", info.opset)
        by_op = {op: info.op_histogram[op] for op in engine.TRT_INT8_OP_TYPES if op in info.op_histogram}
        c3.metric("Nodes of the INT8 op types", len(facts.quantizable),
                  help="Conv, ConvTranspose, Gemm and MatMul nodes in your file. Pre-processing may fuse some (a MatMul and an "
                       "Add into one Gemm; BatchNormalization into the Conv before it); Compare counts the fallback "
                       "candidates of the graph it quantized.")
        st.caption(", ".join(f"{op}: {n}" for op, n in by_op.items()) or "No Conv, ConvTranspose, Gemm or MatMul node: choose "
                   "other op types to quantize on the Compare page.")
        with st.expander("Nodes of the INT8 op types, as your file names them ('#index Op' where it has no name)"):
            st.write(", ".join(facts.quantizable) or "none")
        st.dataframe(pd.DataFrame(info.to_dict()["inputs"]), hide_index=True)
        st.plotly_chart(op_type_figure(info.op_histogram), key="op_types", width="stretch", config={"displayModeBar": False})
        if not failed and not (source == "Upload" and inputs.sample) and not st.session_state.get(state.PENDING_UPLOAD):
            st.page_link("views/compare.py", label="Next: run the comparison", icon=":material/arrow_forward:")

with st.expander("Environment (the same as `quantscope doctor`)"):
    st.code("\n".join(engine.doctor_lines()), language="text")
