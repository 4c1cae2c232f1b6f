#!/usr/bin/env bash
# Installs QuantScope with its test dependencies into .venv and runs the whole test suite.
# Browser tests need Debian's chromium (/usr/bin/chromium); .ci/run installs it, elsewhere they skip.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/ruff check engine app tests bench sample_models
exec .venv/bin/python -m pytest "$@"
