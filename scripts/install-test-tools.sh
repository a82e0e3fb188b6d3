#!/usr/bin/env bash
# Install the system tools the test suite needs (idempotent, quiet).
#
#   ffmpeg  - tests/fixtures/audio_files.py generates real MP3/M4A/OGG/FLAC files with it.
#
# To add a tool: append "command:debian-package" to TOOLS below.
# Runs as root (as the dev machines and CI do); uses sudo otherwise if available.
set -euo pipefail

TOOLS=(
  "ffmpeg:ffmpeg"
)

missing=()
for entry in "${TOOLS[@]}"; do
  cmd="${entry%%:*}"
  pkg="${entry#*:}"
  if ! command -v "$cmd" >/dev/null 2>&1; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-test-tools: need root to install: ${missing[*]}" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-test-tools: installing ${missing[*]}" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-test-tools: apt-get failed" >&2
  exit 1
fi

for entry in "${TOOLS[@]}"; do
  cmd="${entry%%:*}"
  if ! command -v "$cmd" >/dev/null 2>&1; then
    echo "install-test-tools: '$cmd' still not on PATH after install" >&2
    exit 1
  fi
done
