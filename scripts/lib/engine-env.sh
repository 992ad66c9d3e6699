# Shared by engine-up.sh and engine-down.sh: where our own dockerd keeps its state, and logging.
# Source after setting TAG (the script's name in log lines).
#
#   BUILDKIT_EXPORTER_ENGINE_DIR  state dir of our own dockerd (default /tmp/buildkit-exporter-engine)

STATE="${BUILDKIT_EXPORTER_ENGINE_DIR:-/tmp/buildkit-exporter-engine}"
STATE="${STATE%/}"
SOCK="$STATE/docker.sock"
PIDFILE="$STATE/docker.pid"
LOGFILE="$STATE/dockerd.log"
MARKER="$STATE/.buildkit-exporter-engine"

log() { printf '[%s] %s\n' "$TAG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

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
