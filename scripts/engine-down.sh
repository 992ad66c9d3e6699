#!/usr/bin/env bash
# Stops the dockerd that scripts/engine-up.sh started, waits for it to exit, stops what it
# started that outlived it, and removes the state dir (and the bridge it made). Each process is
# found by the pidfile it keeps below the state dir, never by its command line, so nothing of
# anyone else's stops (say, an exporter watching the same socket). Does nothing when
# engine-up.sh used an engine it did not start.
#
#   BUILDKIT_EXPORTER_ENGINE_VERSION  which of our engines: unset or 26.1, or 28.5 (engine-up.sh
#                                 prints it for 28.5, so the same environment stops the same engine)
#   BUILDKIT_EXPORTER_ENGINE_DIR  state dir (default /tmp/buildkit-exporter-engine; 28.5: + `-28.5`)
set -euo pipefail

TAG=engine-down
. "$(dirname "$0")/lib/engine-env.sh"
STOP_TIMEOUT="${BUILDKIT_EXPORTER_ENGINE_STOP_TIMEOUT:-40}"

if [ ! -f "$MARKER" ]; then
  log "no engine started by engine-up.sh in $STATE; nothing to do"
  exit 0
fi

exec 9>"$STATE.lock"
flock -w 120 9 || die "could not lock $STATE.lock"


# What our dockerd started that may outlive it, by the pidfiles they keep below its exec root:
# its containerd, and each container's shim and first process.
leftover_pids() {
  local file
  for file in "$STATE/exec/containerd/containerd.pid" \
    "$STATE"/exec/containerd/daemon/io.containerd.runtime.v2.task/*/*/{shim,init}.pid; do
    pid_of "$file" || true
  done
}

if pid="$(own_pid)"; then
  log "stopping dockerd pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    log "dockerd pid $pid still running after ${STOP_TIMEOUT}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  log "dockerd stopped after ${SECONDS}s"
else
  log "dockerd from $PIDFILE is not running"
fi

# dockerd stops its containerd itself; anything left (after a crash or a kill) goes now.
pids="$(leftover_pids)"
if [ -n "$pids" ]; then
  log "killing leftover processes: $(echo $pids)"
  kill -TERM $pids 2>/dev/null || true
  sleep 2
  pids="$(leftover_pids)"
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
fi

# Unmount whatever is still mounted below the state dir (deepest first), then remove it.
mounts="$(awk -v p="$STATE/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r)"
if [ -n "$mounts" ]; then
  while IFS= read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "WARNING: could not unmount $m"
  done <<<"$mounts"
fi
if awk -v p="$STATE/" 'index($5, p) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
  die "mounts remain below $STATE; not removing it"
fi
if [ -f "$STATE/created-bridge" ] && command -v ip >/dev/null 2>&1; then
  bridge="$(head -n1 "$STATE/created-bridge")"
  if [ -n "$bridge" ] && [ -e "/sys/class/net/$bridge" ]; then
    ip link delete "$bridge" 2>/dev/null && log "deleted bridge $bridge (made by engine-up.sh)" \
      || log "WARNING: could not delete bridge $bridge"
  fi
fi
if [ -f "$STATE/created-docker0" ] && [ -e /sys/class/net/docker0 ] && command -v ip >/dev/null 2>&1; then
  ip link delete docker0 2>/dev/null && log "deleted bridge docker0 (created by our dockerd)" \
    || log "WARNING: could not delete bridge docker0"
fi
rm -rf -- "$STATE"
rm -f -- "$STATE.lock"
log "removed $STATE"
