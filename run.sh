#!/usr/bin/env bash
# Installs QuantScope into .venv and starts the dashboard on the bundled sample model.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/streamlit run app/main.py "$@"
