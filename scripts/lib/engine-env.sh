# Shared by engine-up.sh and engine-down.sh: which engine, where our own dockerd keeps its state,
# and logging. Source after setting TAG (the script's name in log lines).
#
#   BUILDKIT_EXPORTER_ENGINE_VERSION  unset: the engine the user has, else our own Docker Engine 26.1;
#                                     26.1 or 28.5: our own private engine of that version
#                                     (28.5: containerd image store, buildx 0.29 as its client)
#   BUILDKIT_EXPORTER_ENGINE_DIR      state dir of our own 26.1 dockerd (default
#                                     /tmp/buildkit-exporter-engine); 28.5 uses the same path
#                                     with `-28.5` appended, so both can run at once

ENGINE_VERSION="${BUILDKIT_EXPORTER_ENGINE_VERSION:-}"
STATE="${BUILDKIT_EXPORTER_ENGINE_DIR:-/tmp/buildkit-exporter-engine}"
STATE="${STATE%/}"

log() { printf '[%s] %s\n' "$TAG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

case "$ENGINE_VERSION" in
  "" | 26.1) ;;
  28.5) STATE="$STATE-28.5" ;;
  *) die "BUILDKIT_EXPORTER_ENGINE_VERSION must be 26.1 or 28.5 (got '$ENGINE_VERSION')" ;;
esac
SOCK="$STATE/docker.sock"
PIDFILE="$STATE/docker.pid"
LOGFILE="$STATE/dockerd.log"
MARKER="$STATE/.buildkit-exporter-engine"

case "$STATE" in /?*) ;; *) die "BUILDKIT_EXPORTER_ENGINE_DIR must be an absolute path (got '$STATE')" ;; esac
exec </dev/null

# Pid of the dockerd that our pidfile names, if it still runs.
own_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid="$(tr -dc '0-9' <"$PIDFILE")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  case "$(tr '\0' ' ' <"/proc/$pid/cmdline")" in
    *dockerd*"--pidfile $PIDFILE "*) ;;
    *) return 1 ;;
  esac
  printf '%s\n' "$pid"
}
