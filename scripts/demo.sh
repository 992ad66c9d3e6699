#!/usr/bin/env bash
# The demo: one command that shows buildkit-exporter at work on this machine.
#
#   scripts/demo.sh [--no-builds]
#
# Installs what is missing (scripts/provision.sh, as root), builds the daemon, makes sure a Docker
# Engine answers (scripts/engine-up.sh: $DOCKER_HOST, else /var/run/docker.sock, else a private
# engine it starts), then runs the daemon on :9817, a Prometheus on :9090 that scrapes it every
# 5 s with the bundled alert rules (3.5 from provision.sh when it has its web UI, else the one on
# PATH), and sample builds in a loop: a 15-step build shaped like an ML base image, its cached
# rebuild and a failing build. Ctrl-C stops everything it started (the
# private engine only if it started it; BUILDKIT_EXPORTER_KEEP_ENGINE=1 keeps it) and nothing else.
# A taken port is replaced by the next free one (Debian's own prometheus service takes :9090).
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX="${BUILDKIT_EXPORTER_TOOLS:-/opt/buildkit-exporter-tools}"
EXPORTER_PORT=9817
PROMETHEUS_PORT=9090
ROUND_PAUSE=20   # seconds between rounds of builds
STEP_PAUSE=5     # seconds between the builds of a round

log() { printf '[demo] %s\n' "$*" >&2; }
die() { printf '[demo] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
  cat <<'EOF'
Usage: scripts/demo.sh [--no-builds]

Builds buildkit-exporter and runs it on :9817 against the local Docker Engine (or a private one
started for the demo), with a Prometheus on :9090 (scraping every 5 s, alert rules loaded) and
sample builds in a loop: a 15-step ML base image build (~1 min), its cached rebuild and a failing
build. Ctrl-C stops everything it started.

  --no-builds   run no sample builds (watch your own `docker build`s instead)
  -h, --help    show this help

Needs root on a fresh Debian 12 (it runs scripts/provision.sh); without root it skips that and
uses what is installed. BUILDKIT_EXPORTER_KEEP_ENGINE=1 leaves a private engine running.
EOF
}

builds=1
for arg in "$@"; do
  case "$arg" in
    --no-builds) builds=0 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

# --- cleanup: everything below registers what it starts here --------------------------------------
tmp=""
builds_pid=""
exporter_pid=""
prometheus_pid=""
engine_ours=0
images_built=0

# Stops a process group (each child runs in its own), waiting up to 15 s before SIGKILL.
# shellcheck disable=SC2317  # (this and cleanup run from the trap)
stop_group() { # $1: pid of the group leader, $2: what it is
  local pid="$1" i
  if [ -z "$pid" ] || ! kill -0 -- "-$pid" 2>/dev/null; then return 0; fi
  log "stopping $2"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for i in $(seq 150); do
    kill -0 -- "-$pid" 2>/dev/null || break
    [ "$i" -lt 150 ] || kill -KILL -- "-$pid" 2>/dev/null || true
    sleep 0.1
  done
  wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317
cleanup() {
  local status=$?
  # Once, to the end: a second Ctrl-C must not leave half of it running.
  trap - EXIT
  trap '' INT TERM
  # Builds first, so that the daemon still sees the running one canceled.
  stop_group "$builds_pid" "the sample builds"
  stop_group "$exporter_pid" "buildkit-exporter"
  stop_group "$prometheus_pid" "Prometheus"
  if [ "$engine_ours" = 1 ]; then
    if [ -n "${BUILDKIT_EXPORTER_KEEP_ENGINE:-}" ]; then
      log "BUILDKIT_EXPORTER_KEEP_ENGINE is set: the private engine keeps running at $DOCKER_HOST"
    else
      scripts/engine-down.sh || status=1
    fi
  elif [ "$images_built" = 1 ]; then
    # Someone else's engine: take away the demo's images (they carry the demo label), nothing else.
    docker image ls -q --filter label=buildkit-exporter.demo | sort -u | xargs -r docker image rm -f >/dev/null 2>&1 || true
  fi
  if [ -n "$tmp" ]; then rm -rf -- "$tmp"; fi
  log "stopped"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Something listens on loopback port $1.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { # $1: preferred port; prints it or the next free one
  local port
  for port in $(seq "$1" $(($1 + 20))); do
    if port_taken "$port"; then continue; fi
    [ "$port" = "$1" ] || log "port $1 is taken; using $port"
    printf '%s\n' "$port"
    return 0
  done
  die "ports $1 to $(($1 + 20)) are all taken"
}

# Waits until $1 answers over HTTP while process $2 runs; $3 names it, $4 is its log.
wait_http() {
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    if ! kill -0 "$2" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$4" >&2 || true
      die "$3 did not answer at $1"
    fi
    sleep 0.2
  done
}

# --- 1. tools, the daemon, an engine ------------------------------------------------------------------
if [ "$(id -u)" = 0 ]; then
  scripts/provision.sh
else
  log "not root: skipping scripts/provision.sh (using what is installed)"
fi

cargo=cargo
command -v cargo >/dev/null 2>&1 || cargo="${HOME:-/root}/.cargo/bin/cargo"
[ -x "$(command -v "$cargo" || true)" ] || die "cargo not found: install Rust (https://rustup.rs)"
log "building buildkit-exporter (cargo build --release)"
"$cargo" build --release
exporter="${CARGO_TARGET_DIR:-target}/release/buildkit-exporter"

# Whether engine-up.sh's private engine already runs, so that only one started here is stopped.
# shellcheck disable=SC1091  # (engine-env.sh is checked with engine-up.sh)
own_engine_pid() { (TAG=demo . scripts/lib/engine-env.sh && own_pid) || true; }
engine_before="$(own_engine_pid)"
unset BUILDKIT_EXPORTER_ENGINE_STARTED
engine_env="$(scripts/engine-up.sh)" || {
  [ -n "$engine_before" ] || [ -z "$(own_engine_pid)" ] || engine_ours=1
  die "no Docker Engine (scripts/engine-up.sh failed)"
}
eval "$engine_env"
if [ "${BUILDKIT_EXPORTER_ENGINE_STARTED:-}" = 1 ] && [ -z "$engine_before" ]; then engine_ours=1; fi
export DOCKER_HOST

tmp="$(mktemp -d -t buildkit-exporter-demo.XXXXXX)"

# --- 2. the daemon and Prometheus, each in its own process group --------------------------------------
EXPORTER_PORT="$(free_port "$EXPORTER_PORT")"
set -m
"$exporter" --source "$DOCKER_HOST" --web.listen-address ":$EXPORTER_PORT" \
  >"$tmp/exporter.log" 2>&1 </dev/null &
exporter_pid=$!
set +m
wait_http "http://127.0.0.1:$EXPORTER_PORT/metrics" "$exporter_pid" buildkit-exporter "$tmp/exporter.log"

# Prometheus 3.5 when it has its web UI. Debian builds Prometheus without the React UI: its 3.5
# then serves only the API, while Debian 12's 2.42 (on PATH) still carries the classic UI.
prom3="$PREFIX/prometheus-3.5/usr/bin/prometheus"
prom3_assets="$PREFIX/prometheus-3.5/usr/share/prometheus/web"
if [ -x "$prom3" ] && { [ -d "$prom3_assets/static/react" ] || ! command -v prometheus >/dev/null 2>&1; }; then
  prometheus=("$prom3" --web.local-assets "$prom3_assets/")
elif command -v prometheus >/dev/null 2>&1; then
  prometheus=("$(command -v prometheus)")
else
  die "prometheus not found (run scripts/provision.sh as root)"
fi
PROMETHEUS_PORT="$(free_port "$PROMETHEUS_PORT")"
# The job name is the one the alert rules expect; every 5 s, so that running steps show up.
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - "$PWD/deploy/prometheus/rules.yml"
scrape_configs:
  - job_name: buildkit-exporter
    static_configs:
      - targets: ["localhost:$EXPORTER_PORT"]
EOF
set -m
(cd "$tmp" && exec "${prometheus[@]}" --config.file "$tmp/prometheus.yml" --storage.tsdb.path "$tmp/prometheus-data" \
  --web.listen-address ":$PROMETHEUS_PORT") >"$tmp/prometheus.log" 2>&1 </dev/null &
prometheus_pid=$!
set +m
wait_http "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" "$prometheus_pid" Prometheus "$tmp/prometheus.log"
# The alerts page: the React UI's, else the classic one, else (no UI at all) the API.
alerts="api/v1/alerts"
for page in alerts classic/alerts; do
  if curl -fsS -o /dev/null "http://127.0.0.1:$PROMETHEUS_PORT/$page" 2>/dev/null; then alerts="$page"; break; fi
done

# --- 3. sample builds ---------------------------------------------------------------------------------
# The project's motivating case: an ML base image, each step simulated by echo and sleep on the
# local tinybase image (engine-up.sh made sure of it; no registry is needed). ARG NONCE makes every
# RUN miss the cache when it changes, while the step texts stay the same, so the ETA learns them.
mkdir -p "$tmp/context"
printf 'numpy\nscipy\nopencv-python\ntorch\ntorchvision\nfvcore\niopath\n' >"$tmp/context/requirements.txt"
cat >"$tmp/context/ml-base.Dockerfile" <<'EOF'
FROM tinybase:latest
WORKDIR /workspace
ARG NONCE
RUN echo "apt-get install python3 python3-dev python3-pip" && sleep 5
RUN echo "apt-get install build-essential cmake ninja-build git" && sleep 5
RUN echo "apt-get install libgl1-mesa-dev libglib2.0-0 libsm6 libxext6" && sleep 4
RUN echo "apt-get install libopenblas-dev liblapack-dev" && sleep 4
RUN echo "apt-get install ffmpeg libavcodec-dev" && sleep 5
RUN echo "pip install --upgrade pip setuptools wheel" && sleep 3
COPY requirements.txt /workspace/
RUN echo "pip install numpy scipy opencv-python" && sleep 5
RUN echo "pip install torch torchvision" && sleep 9
RUN echo "pip install fvcore iopath" && sleep 3
RUN echo "pip install pytorch3d (from source)" && sleep 8
RUN echo "pip install detectron2 (from source)" && sleep 8
RUN echo "python3 -c 'import torch, pytorch3d, detectron2'" && sleep 1
EOF
cat >"$tmp/context/ml-base-cuda.Dockerfile" <<'EOF'
FROM tinybase:latest
WORKDIR /workspace
ARG NONCE
RUN echo "apt-get install python3 python3-dev python3-pip" && sleep 2
RUN echo "apt-get install cuda-toolkit-12-4" && sleep 3 && echo "E: Unable to locate package cuda-toolkit-12-4" >&2 && exit 100
EOF

build() { # $1: name, $2: what this build shows, $3: nonce
  local started=$SECONDS
  log "build $1 ($2)"
  # BUILDX_BUILDER: the engine's own BuildKit, even when another builder is the current one.
  if BUILDX_BUILDER=default docker build --progress=plain -f "$tmp/context/$1.Dockerfile" \
      -t "buildkit-exporter-demo/$1:latest" --label "org.opencontainers.image.title=$1" \
      --label buildkit-exporter.demo=1 --build-arg "NONCE=$3" "$tmp/context" >>"$tmp/builds.log" 2>&1; then
    log "build $1 succeeded after $((SECONDS - started)) s"
  else
    log "build $1 failed after $((SECONDS - started)) s"
  fi
}

builds_loop() {
  local round=1 nonce
  while :; do
    nonce="$(date +%s%N)"
    log "round $round"
    build ml-base "15 steps, ~1 min" "$nonce"
    sleep "$STEP_PAUSE"
    build ml-base "its cached rebuild" "$nonce"
    sleep "$STEP_PAUSE"
    build ml-base-cuda "fails at step 4/4, on purpose" "$nonce"
    sleep "$ROUND_PAUSE"
    round=$((round + 1))
  done
}

if [ "$builds" = 1 ]; then
  images_built=1
  set -m
  builds_loop </dev/null &
  builds_pid=$!
  set +m
fi

# --- 4. where to look -----------------------------------------------------------------------------------
cat <<EOF

  buildkit-exporter is watching $DOCKER_HOST
    status page   http://localhost:$EXPORTER_PORT/
    metrics       http://localhost:$EXPORTER_PORT/metrics
    JSON API      http://localhost:$EXPORTER_PORT/api/v1/builds
    Prometheus    http://localhost:$PROMETHEUS_PORT/   (alerts: http://localhost:$PROMETHEUS_PORT/$alerts)
  logs: $tmp/{exporter,prometheus,builds}.log (removed on exit)
  Ctrl-C stops everything the demo started.

EOF

# Until Ctrl-C (the trap), or until a child ends on its own.
wait -n "$exporter_pid" "$prometheus_pid" ${builds_pid:+"$builds_pid"} || true
if ! kill -0 "$exporter_pid" 2>/dev/null; then tail -n 20 "$tmp/exporter.log" >&2 || true; fi
if ! kill -0 "$prometheus_pid" 2>/dev/null; then tail -n 20 "$tmp/prometheus.log" >&2 || true; fi
die "a process of the demo ended on its own"
