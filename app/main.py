"""Entry point and router: `streamlit run app/main.py`."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `streamlit run` from a checkout without install

import engine  # noqa: E402
from app import actions, state, workspace  # noqa: E402

st.set_page_config(page_title="QuantScope", page_icon=":mag:", layout="wide")
state.init()
if state.SETTINGS not in st.session_state:  # the environment is read once, when the session starts
    try:
        st.session_state[state.SETTINGS] = engine.Settings.from_env()
    except engine.QuantScopeError as err:
        st.error(str(err))
        st.stop()


def _password_gate() -> None:
    """With `password` in .streamlit/secrets.toml (for a LAN demo), nothing renders until it is given."""
    import hmac

    try:
        expected = st.secrets.get("password")
    except Exception:  # noqa: BLE001 - no secrets file: no gate
        expected = None
    if not expected or st.session_state.get(state.AUTHENTICATED):
        return
    given = st.text_input("Password", type="password", key="qs_password")
    if given and hmac.compare_digest(given.encode(), str(expected).encode()):
        st.session_state[state.AUTHENTICATED] = True
        st.rerun()
    if given:
        st.error("That password is not right; ask the person running this QuantScope for it.")
    st.stop()


_password_gate()
workspace.attach()
actions.apply_finished()  # a job that finished since the last run: its result first, then the page
if notice := st.session_state.pop(state.NOTICE, None):
    st.warning(notice)

# Never name this folder pages/: Streamlit then runs its scripts directly (skipping this file, so the password gate
# and the workspace) for any page address requested before st.navigation has run once in the process.
PAGES = Path(__file__).resolve().parent / "views"
opened = st.session_state.pop(state.OPEN_LAYERS, False)  # a configuration opened from the Sweep page has just finished
layers = st.Page(PAGES / "layers.py", title="Layers", icon=":material/stacked_line_chart:")
nav = st.navigation([
    st.Page(PAGES / "load.py", title="Load", icon=":material/upload_file:", default=True),
    st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page(PAGES / "sweep.py", title="Sweep", icon=":material/tune:"),
    layers,
    st.Page(PAGES / "rebuild.py", title="Rebuild", icon=":material/build:"),
    st.Page(PAGES / "sensitivity.py", title="Sensitivity", icon=":material/troubleshoot:"),
    st.Page(PAGES / "latency.py", title="Latency", icon=":material/speed:"),
    st.Page(PAGES / "history.py", title="History", icon=":material/history:"),
])
state.keep_widgets()
if opened and nav.url_path == "sweep":  # still on the Sweep page: show it where "Open on the Layers page" said
    st.switch_page(layers)
nav.run()
