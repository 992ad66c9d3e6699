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
  # A buildkitd that was killed (the tests kill it mid-build) leaves its running steps' root
  # filesystems mounted: unmount what is below its root, deepest first, lazily (a step's
  # process may still be ending), then remove the state.
  awk -v root="$STATE/root/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mount; do
    umount -l "$mount" 2>/dev/null || log "cannot unmount $mount"
  done
  rm -rf "$STATE/root" 2>/dev/null || log "left $STATE/root (still busy)"
fi
