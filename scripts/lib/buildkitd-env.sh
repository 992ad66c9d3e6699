# Shared by buildkitd-up.sh and buildkitd-down.sh: where our own buildkitd keeps its state, and
# how to find it again. Source after setting TAG (the script's name in log lines).

PREFIX="${BUILDKIT_EXPORTER_TOOLS:-/opt/buildkit-exporter-tools}"
BIN="$PREFIX/buildkit-v0.32.2/bin"
STATE="${BUILDKIT_EXPORTER_BUILDKITD_DIR:-/tmp/buildkit-exporter-buildkitd}"
STATE="${STATE%/}"
SOCK="$STATE/buildkitd.sock"
PIDFILE="$STATE/buildkitd.pid"
LOGFILE="$STATE/buildkitd.log"

log() { printf '[%s] %s\n' "$TAG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

case "$STATE" in /?*) ;; *) die "BUILDKIT_EXPORTER_BUILDKITD_DIR must be an absolute path (got '$STATE')" ;; esac
exec </dev/null

# Pid of the buildkitd that our PID file names, if that process is still ours: a pid reused by
# another process after ours died is not (its executable is not ours).
own_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid="$(tr -dc '0-9' <"$PIDFILE")"
  [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$BIN/buildkitd" ] || return 1
  printf '%s\n' "$pid"
}
