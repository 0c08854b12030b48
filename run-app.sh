#!/usr/bin/env bash
# Start DreamRunner Studio on its built-in defaults (http://127.0.0.1:7860). Extra arguments go to app.py.
source "$(dirname "$0")/scripts/setup.sh" requirements.txt
exec .venv/bin/python app.py "$@"
