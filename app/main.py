"""Entry point and router: `streamlit run app/main.py`."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `streamlit run` from a checkout without install

from app import state  # noqa: E402

st.set_page_config(page_title="QuantScope", page_icon=":mag:", layout="wide")
state.init()

PAGES = Path(__file__).resolve().parent / "pages"
nav = st.navigation([
    st.Page(PAGES / "load.py", title="Load", icon=":material/upload_file:", default=True),
    st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page(PAGES / "layers.py", title="Layers", icon=":material/stacked_line_chart:"),
    st.Page(PAGES / "rebuild.py", title="Rebuild", icon=":material/build:"),
    st.Page(PAGES / "sensitivity.py", title="Sensitivity", icon=":material/troubleshoot:"),
    st.Page(PAGES / "latency.py", title="Latency", icon=":material/speed:"),
    st.Page(PAGES / "history.py", title="History", icon=":material/history:"),
])
nav.run()
