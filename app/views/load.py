"""Load: the bundled sample (default, zero uploads) or an uploaded model and data; a model summary."""

from __future__ import annotations

import shutil

import pandas as pd
import streamlit as st

import engine
from app import state
from app.actions import busy, sample_catalog, sample_inputs
from app.workspace import discard_upload_sets, new_upload_set, save_upload

st.title("Load a model and calibration data")
MAX_MB = st.get_option("server.maxUploadSize")

catalog = sample_catalog()
SOURCES = ["Bundled sample", "Upload"]
# The radio's own state is dropped when another page runs, so its choice lives in a key of ours: coming back to
# this page must never swap uploaded inputs for the sample.
source = st.radio("Source", SOURCES, horizontal=True, key="load_source",
                  index=SOURCES.index(st.session_state.get(state.LOAD_SOURCE, SOURCES[0])))
st.session_state[state.LOAD_SOURCE] = source

if source == "Bundled sample":
    names = list(catalog["models"])
    name = st.selectbox("Sample model", names, index=names.index(catalog["default"]), key="load_sample")
    st.caption(catalog["models"][name]["description"])
    if st.session_state.get(state.INPUTS, {}).get("name") != name or not st.session_state[state.INPUTS].get("sample"):
        st.session_state[state.INPUTS] = sample_inputs(name)
else:
    st.caption(f"Uploads up to {MAX_MB} MB each. Nothing uploaded is executed: arrays load without pickle, "
               "zips are checked before they are read.")
    model_file = st.file_uploader("ONNX model (.onnx, a single file)", type=["onnx"], key="up_model")
    calib_file = st.file_uploader("Calibration data (.npz, .npy, Polygraphy inputs .json, or a .zip of images)",
                                  type=["npz", "npy", "json", "zip"], key="up_calib")
    eval_file = st.file_uploader("Evaluation data (optional, same formats; default: the calibration data)",
                                 type=["npz", "npy", "json", "zip"], key="up_eval")
    labels_file = st.file_uploader("Labels for the evaluation data (optional, .npy of integers)", type=["npy"], key="up_labels")
    with st.expander("Image preprocessing (for .zip image folders)"):
        c1, c2, c3 = st.columns(3)
        layout = c1.selectbox("Layout", ["auto", "NCHW", "NHWC"], key="pre_layout")
        color = c2.selectbox("Color", ["auto", "RGB", "BGR", "GRAY"], key="pre_color")
        scale = c3.number_input("Scale", value=1 / 255, format="%.6f", key="pre_scale")
        mean = st.text_input("Mean (comma-separated)", "0", key="pre_mean")
        std = st.text_input("Std (comma-separated)", "1", key="pre_std")
    if st.button("Use these files", type="primary", disabled=model_file is None or calib_file is None):
        sid = st.session_state[state.WORKSPACE]
        try:
            images = engine.ImagePreprocess(
                layout=None if layout == "auto" else layout, color=None if color == "auto" else color, scale=float(scale),
                mean=tuple(float(v) for v in mean.split(",")), std=tuple(float(v) for v in std.split(",")))
        except ValueError:
            st.error("Mean and std must be comma-separated numbers, e.g. 0.485,0.456,0.406.")
            st.stop()
        upload_set = None
        try:
            upload_set = new_upload_set(sid)
            with st.spinner("Checking the model and data (nothing uploaded is executed)..."):
                model_bytes = model_file.getvalue()
                proto = engine.load_model_bytes(model_bytes, name=f"'{model_file.name}'")
                info = engine.model_info(proto)
                model_path = save_upload(upload_set, "model", model_file.name, model_bytes)
                calib_path = save_upload(upload_set, "calib", calib_file.name, calib_file.getvalue())
                calib = engine.load_data(calib_path, info, images=images, what=f"'{calib_file.name}'")
                eval_path = None
                n = calib.num_samples
                if eval_file is not None:
                    eval_path = save_upload(upload_set, "eval", eval_file.name, eval_file.getvalue())
                    n = engine.load_data(eval_path, info, images=images, what=f"'{eval_file.name}'").num_samples
                labels_path = None
                if labels_file is not None:
                    labels_path = save_upload(upload_set, "labels", labels_file.name, labels_file.getvalue())
                    engine.load_labels(labels_path, n)
        except (engine.QuantScopeError, OSError) as err:  # OSError: the disk is full or the runs root unwritable
            if upload_set is not None:
                shutil.rmtree(upload_set, ignore_errors=True)
            st.error(str(err) if isinstance(err, engine.QuantScopeError) else engine.unexpected_error_sentence(err))
            # the previous selection, and its files, stay in place
        else:
            if not busy():  # a queued or running comparison may still read the previous files
                discard_upload_sets(sid, keep=upload_set)
            st.session_state[state.INPUTS] = {
                "name": model_file.name, "model": str(model_path), "calib": str(calib_path),
                "data": str(eval_path) if eval_path else None, "labels": str(labels_path) if labels_path else None,
                "images": images, "sample": False,
            }
            st.success(f"Loaded {model_file.name} with {calib.num_samples} calibration samples.")

inputs = st.session_state.get(state.INPUTS)
if inputs:
    try:
        proto = engine.load_model(inputs["model"])
        info = engine.model_info(proto)
    except engine.QuantScopeError as err:
        st.error(str(err))
    else:
        st.subheader(f"Model: {inputs['name']}")
        c1, c2, c3 = st.columns(3)
        c1.metric("Nodes", info.node_count)
        c2.metric("Opset", info.opset)
        quantizable = sum(v for k, v in info.op_histogram.items() if k in engine.TRT_INT8_OP_TYPES)
        c3.metric("Nodes INT8 will quantize", quantizable, help="Conv, ConvTranspose, Gemm, MatMul by default")
        with st.expander("Nodes INT8 will quantize (before BatchNormalization folding)"):
            st.write(", ".join(n.name or n.op_type for n in proto.graph.node if n.op_type in engine.TRT_INT8_OP_TYPES))
        st.dataframe(pd.DataFrame(info.to_dict()["inputs"]), hide_index=True)
        hist = pd.DataFrame({"op type": list(info.op_histogram), "count": list(info.op_histogram.values())})
        st.bar_chart(hist, x="op type", y="count", horizontal=True, height=220)
        st.page_link("views/compare.py", label="Next: run the comparison", icon=":material/arrow_forward:")

with st.expander("Environment (the same as `quantscope doctor`)"):
    st.code("\n".join(engine.doctor_lines()), language="text")
