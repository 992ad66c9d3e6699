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

# The pid pidfile $1 names, if that process still runs. It must have started before the file
# was written (give or take a second of rounding): a pid the system handed to another process
# after ours ended is not ours. Processes are only ever found this way, never by their command
# line, which anyone's process may share (say, an exporter watching our socket).
pid_of() {
  local pid stat ticks boot
  [ -f "$1" ] || return 1
  pid="$(tr -dc '0-9' <"$1")"
  [ -n "$pid" ] && stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  # Field 22, the start in clock ticks since boot; the command name before it may hold spaces.
  ticks="$(printf '%s\n' "${stat##*) }" | awk '{ print $20 }')"
  boot="$(awk '$1 == "btime" { print $2 }' /proc/stat)"
  [ $((boot + ticks / $(getconf CLK_TCK))) -le $(($(stat -c %Y "$1") + 1)) ] || return 1
  printf '%s\n' "$pid"
}

# Pid of the dockerd that our pidfile names, if it still runs.
own_pid() { pid_of "$PIDFILE"; }
