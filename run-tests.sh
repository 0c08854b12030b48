#!/usr/bin/env bash
# Run the whole test suite. Extra arguments go to pytest.
source "$(dirname "$0")/scripts/setup.sh" requirements.txt requirements-dev.txt
# The editor's end-to-end tests drive a real Chromium; install Debian's when it is missing and we may.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  else
    echo "warning: chromium is not installed and cannot be installed here; browser tests will be skipped" >&2
  fi
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
