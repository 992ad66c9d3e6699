#!/usr/bin/env bash
# Stops the buildkitd that scripts/buildkitd-up.sh started (by its PID file: nothing else), and
# removes its state unless BUILDKIT_EXPORTER_KEEP_BUILDKITD is set.
set -euo pipefail

TAG=buildkitd-down
. "$(dirname "$0")/lib/buildkitd-env.sh"

if pid="$(own_pid)"; then
  log "stopping buildkitd ($pid)"
  kill "$pid"
  for _ in $(seq 1 40); do
    own_pid >/dev/null || break
    sleep 0.25
  done
  if own_pid >/dev/null; then
    log "buildkitd ($pid) still runs after 10 s: killing it"
    kill -9 "$pid" 2>/dev/null || true
  fi
fi
rm -f "$PIDFILE"
if [ -z "${BUILDKIT_EXPORTER_KEEP_BUILDKITD:-}" ] && [ -d "$STATE/root" ]; then
  # Its mounts go with it; anything still mounted below the root is left rather than forced.
  rm -rf "$STATE/root" 2>/dev/null || log "left $STATE/root (still busy)"
fi
