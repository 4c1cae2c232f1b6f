"""QuantScope dashboard (Streamlit). Calls only the engine's public API."""
