#!/usr/bin/env bash
# Runs a command while stress-ng keeps every core busy, and stops stress-ng afterwards:
#
#   scripts/loaded.sh cargo test --test engine
#
# A build host is busy by definition, so the tests must hold with no spare CPU: correctness
# never depends on timing.
set -euo pipefail
[ "$#" -gt 0 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }
command -v stress-ng >/dev/null || { echo "[loaded] stress-ng is missing (scripts/provision.sh installs it)" >&2; exit 1; }
stress-ng --cpu "$(nproc)" --timeout 0 --quiet &
stress=$!
trap 'kill "$stress" 2>/dev/null; wait "$stress" 2>/dev/null || true' EXIT
echo "[loaded] $(nproc) cores busy (stress-ng pid $stress): $*" >&2
"$@"
