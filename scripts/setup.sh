# Sourced by run-app.sh and run-tests.sh: make .venv and install what the requirements files list, once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
"$PYTHON" - <<'PY' || { echo "DreamRunner Studio needs Python 3.10 or newer (set PYTHON=...)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat "$@" pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "installing dependencies ($*) into .venv; the first time takes a few minutes"
  .venv/bin/python -m pip install --quiet --upgrade pip
  args=()
  for requirements in "$@"; do args+=(-r "$requirements"); done
  .venv/bin/python -m pip install --quiet "${args[@]}"
  .venv/bin/python -m pip install --quiet --no-deps -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi
