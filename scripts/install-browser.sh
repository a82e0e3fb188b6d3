#!/usr/bin/env bash
# Install what tests/e2e/test_dashboard.py needs (idempotent, quiet):
#
#   chromium    - Debian's package at /usr/bin/chromium (Playwright's own browser download cannot work here).
#   playwright  - the Python package, installed into the project's venv; it drives /usr/bin/chromium and never
#                 downloads a browser (no `playwright install`).
#
# Runs as root (as the dev machines and CI do); uses sudo otherwise if available.
# Usage: bash scripts/install-browser.sh [path/to/venv/bin]   (default: .venv/bin)
set -euo pipefail

BIN="${1:-.venv/bin}"
PLAYWRIGHT_VERSION="1.65.2"

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      SUDO="sudo"
    else
      echo "install-browser: need root to install chromium" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "install-browser: installing chromium" >&2
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-browser: apt-get failed" >&2
    exit 1
  fi
  if [ ! -x /usr/bin/chromium ]; then
    echo "install-browser: /usr/bin/chromium still missing after install" >&2
    exit 1
  fi
fi

if [ -x "$BIN/python" ] && ! "$BIN/python" -c "import playwright" >/dev/null 2>&1; then
  echo "install-browser: installing playwright==$PLAYWRIGHT_VERSION into $BIN" >&2
  "$BIN/pip" install --quiet --disable-pip-version-check "playwright==$PLAYWRIGHT_VERSION"
fi
