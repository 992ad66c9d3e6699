#!/usr/bin/env bash
# Makes sure a Docker Engine with BuildKit (API >= 1.41, engine >= 23) answers, plus the base
# image tinybase:latest (busybox, built locally: no registry needed) and the image of the tests'
# buildx container builders (BuildKit v0.32.2, from provision.sh), and prints shell `export`
# lines on stdout (everything else goes to stderr):
#
#   eval "$(scripts/engine-up.sh)"
#
# Order: an engine that already answers at $DOCKER_HOST, then /var/run/docker.sock, then our own
# dockerd from a previous call (state dir below), else a new dockerd from the prefix that
# scripts/provision.sh unpacked. Only in the last two cases BUILDKIT_EXPORTER_ENGINE_STARTED=1 is
# printed, and scripts/engine-down.sh stops it.
#
# A given BUILDKIT_EXPORTER_ENGINE_VERSION skips the first two: our own engine of that version.
# Docker Engine 28.5 (BuildKit v0.25) runs beside 26.1, with the containerd image store, its own
# state dir (the 26.1 one plus `-28.5`), its own bridge and TLS port, and its own tinybase image:
#
#   eval "$(BUILDKIT_EXPORTER_ENGINE_VERSION=28.5 scripts/engine-up.sh)"
#
# It also prints DOCKER_CONFIG: a config dir whose cli-plugins/ holds buildx 0.29 (the client of
# the same release line as that engine; ~/.docker/cli-plugins holds 26.1's buildx 0.13), and
# BUILDKIT_EXPORTER_ENGINE_VERSION, so that scripts/engine-down.sh in the same environment stops
# that engine.
#
#   BUILDKIT_EXPORTER_TOOLS       prefix from provision.sh (default /opt/buildkit-exporter-tools)
#   BUILDKIT_EXPORTER_ENGINE_DIR  state dir of our own dockerd (default /tmp/buildkit-exporter-engine)
#   BUILDKIT_EXPORTER_ENGINE_TLS_PORT  loopback port of its TLS listener (default 23760; 28.5: +1;
#                                 the next free one when that is taken)
#   BUILDKIT_EXPORTER_ENGINE_BRIDGE, BUILDKIT_EXPORTER_ENGINE_BRIDGE_ADDR  28.5's bridge (default
#                                 bkx28-<hash of the state dir>, the first unrouted 10.250.N.1/24
#                                 from N=28; made here when missing, deleted by engine-down.sh)
set -euo pipefail

PREFIX="${BUILDKIT_EXPORTER_TOOLS:-/opt/buildkit-exporter-tools}"
TAG=engine-up
. "$(dirname "$0")/lib/engine-env.sh"
OWN_HOST="unix://$SOCK"
START_TIMEOUT="${BUILDKIT_EXPORTER_ENGINE_TIMEOUT:-60}"
MIN_API="1.41"
IMAGE="tinybase:latest"
BUILDER_IMAGE="${BUILDKIT_EXPORTER_BUILDER_IMAGE:-buildkit-exporter/buildkit:v0.32.2}"
TLS_DIR="$STATE/tls"
TLS_PORT="${BUILDKIT_EXPORTER_ENGINE_TLS_PORT:-23760}"
ENGINE_PREFIX="$PREFIX"
if [ "$ENGINE_VERSION" = 28.5 ]; then
  ENGINE_PREFIX="$PREFIX/engine-28.5"
  TLS_PORT=$((TLS_PORT + 1))
  # One bridge per state dir, so that two 28.5 engines (other state dirs) never share one.
  BRIDGE="${BUILDKIT_EXPORTER_ENGINE_BRIDGE:-bkx28-$(printf '%s' "$STATE" | md5sum | cut -c1-8)}"
  BRIDGE_ADDR="${BUILDKIT_EXPORTER_ENGINE_BRIDGE_ADDR:-}"
  CLIENT_CONFIG="$STATE/docker-config"
fi

if command -v docker >/dev/null 2>&1; then
  DOCKER="$(command -v docker)"
elif [ -x "$PREFIX/usr/bin/docker" ]; then
  DOCKER="$PREFIX/usr/bin/docker"
else
  die "no docker CLI (run scripts/provision.sh)"
fi

# Server API version of an engine, empty if it does not answer. $1: a docker host, or "" for the
# caller's own settings (DOCKER_HOST, context, TLS variables).
server_api() {
  if [ -n "$1" ]; then
    timeout 15 "$DOCKER" -H "$1" version --format '{{.Server.APIVersion}}' 2>/dev/null || true
  else
    timeout 15 "$DOCKER" version --format '{{.Server.APIVersion}}' 2>/dev/null || true
  fi
}
describe() { # $1: API version or empty
  if [ -n "$1" ]; then printf 'answers with API %s < %s' "$1" "$MIN_API"; else printf 'does not answer'; fi
}
api_ok() { # $1: API version
  [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$MIN_API" "$1" | sort -V | head -n1)" = "$MIN_API" ]
}


wait_ready() { # $1: pid
  local deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if api_ok "$(server_api "$OWN_HOST")"; then return 0; fi
    if ! kill -0 "$1" 2>/dev/null; then
      log "dockerd (pid $1) exited; last lines of $LOGFILE:"
      tail -n 30 "$LOGFILE" >&2 || true
      die "dockerd failed to start"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "dockerd (pid $1) did not answer on $OWN_HOST within ${START_TIMEOUT}s; last lines of $LOGFILE:"
      tail -n 30 "$LOGFILE" >&2 || true
      die "timed out waiting for dockerd"
    fi
    sleep 0.2
  done
}

ensure_image() { # $1: docker host
  if timeout 30 "$DOCKER" -H "$1" image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image $IMAGE present"
    return 0
  fi
  local busybox tmp applet
  busybox="$(command -v busybox || true)"
  [ -n "$busybox" ] || die "busybox not found (run scripts/provision.sh: busybox-static)"
  tmp="$(mktemp -d)"
  mkdir -p "$tmp"/rootfs/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home,var/tmp,dev,proc,sys,run}
  chmod 1777 "$tmp/rootfs/tmp" "$tmp/rootfs/var/tmp"
  cp "$busybox" "$tmp/rootfs/bin/busybox"
  for applet in $("$busybox" --list) sh sleep echo cat true false ls mkdir touch date env; do
    [ -e "$tmp/rootfs/bin/$applet" ] || ln -s busybox "$tmp/rootfs/bin/$applet"
  done
  ln -sf ../../bin/env "$tmp/rootfs/usr/bin/env"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$tmp/rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/rootfs/etc/group"
  log "importing $IMAGE (busybox $("$busybox" 2>&1 | head -n1 | awk '{print $2}'))"
  tar -C "$tmp/rootfs" --numeric-owner --owner=0 --group=0 -cf - . \
    | timeout 120 "$DOCKER" -H "$1" import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["/bin/sh"]' \
        -m "busybox base image made by buildkit-exporter scripts/engine-up.sh" \
        - "$IMAGE" >/dev/null
  rm -rf "$tmp"
}

# The image of the buildx container builders in the tests: BuildKit v0.32.2 as provision.sh built
# it (no registry here for moby/buildkit; buildx falls back to a local image when the pull fails).
# Imported, not built, so that making it leaves no build in the engine's history.
ensure_builder_image() { # $1: docker host
  local bin="$PREFIX/buildkit-v0.32.2/bin" busybox runc tmp lib
  if timeout 30 "$DOCKER" -H "$1" image inspect "$BUILDER_IMAGE" >/dev/null 2>&1; then
    log "image $BUILDER_IMAGE present"
    return 0
  fi
  [ -x "$bin/buildkitd" ] && [ -x "$bin/buildctl" ] || die "$bin/buildkitd missing (run scripts/provision.sh)"
  busybox="$(command -v busybox)" || die "busybox not found (run scripts/provision.sh)"
  runc="$(command -v runc)" || die "runc not found (run scripts/provision.sh)"
  tmp="$(mktemp -d)"
  mkdir -p "$tmp"/rootfs/{bin,usr/bin,etc,tmp,run,var/lib/buildkit,proc,sys,dev}
  chmod 1777 "$tmp/rootfs/tmp"
  cp "$bin/buildkitd" "$bin/buildctl" "$runc" "$tmp/rootfs/usr/bin/"
  cp "$busybox" "$tmp/rootfs/bin/busybox"
  ln -s busybox "$tmp/rootfs/bin/sh"
  # runc is linked dynamically: its libraries and loader, at the paths it was linked with.
  for lib in $(ldd "$runc" | grep -o '/[^ ]*'); do
    mkdir -p "$tmp/rootfs$(dirname "$lib")"
    cp -L "$lib" "$tmp/rootfs$lib"
  done
  log "importing $BUILDER_IMAGE ($("$bin/buildkitd" --version | awk '{print $3}'))"
  tar -C "$tmp/rootfs" --numeric-owner --owner=0 --group=0 -cf - . \
    | timeout 120 "$DOCKER" -H "$1" import \
        -c 'ENV PATH=/usr/bin:/bin' \
        -c 'ENTRYPOINT ["/usr/bin/buildkitd"]' \
        -m "BuildKit v0.32.2 for buildx container builders, made by buildkit-exporter scripts/engine-up.sh" \
        - "$BUILDER_IMAGE" >/dev/null
  rm -rf "$tmp"
}

emit() { # $1: docker host, $2: started by us (0/1)
  if [ -n "${CLIENT_CONFIG:-}" ]; then
    log "client: $(DOCKER_CONFIG="$CLIENT_CONFIG" "$DOCKER" buildx version 2>/dev/null | head -n1) (DOCKER_CONFIG=$CLIENT_CONFIG)"
  elif ! "$DOCKER" buildx version >/dev/null 2>&1; then
    log "WARNING: the docker CLI has no buildx plugin; run scripts/provision.sh"
  fi
  printf 'export DOCKER_HOST=%q\n' "$1"
  printf 'export DOCKER_BUILDKIT=1\n'
  printf 'export BUILDKIT_EXPORTER_BUILDER_IMAGE=%q\n' "$BUILDER_IMAGE"
  if [ "$2" = 1 ]; then printf 'export BUILDKIT_EXPORTER_ENGINE_STARTED=1\n'; fi
  if [ -n "$ENGINE_VERSION" ]; then printf 'export BUILDKIT_EXPORTER_ENGINE_VERSION=%q\n' "$ENGINE_VERSION"; fi
  if [ -n "${CLIENT_CONFIG:-}" ]; then printf 'export DOCKER_CONFIG=%q\n' "$CLIENT_CONFIG"; fi
  # Our own engine also listens with TLS (client certificate required), for the TLS tests.
  if [ "$2" = 1 ] && [ -f "$TLS_DIR/key.pem" ] && [ -f "$STATE/tls-port" ]; then
    printf 'export BUILDKIT_EXPORTER_ENGINE_TLS_HOST=%q\n' "tcp://127.0.0.1:$(cat "$STATE/tls-port")"
    printf 'export BUILDKIT_EXPORTER_ENGINE_TLS_CERTS=%q\n' "$TLS_DIR"
  fi
}

# A CA, a server certificate for 127.0.0.1 and a client certificate, in Docker's file names
# (ca.pem, cert.pem, key.pem for clients), made once per state dir.
make_certs() {
  [ -f "$TLS_DIR/key.pem" ] && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl missing (run scripts/provision.sh)"
  local tmp
  tmp="$(mktemp -d)"
  (
    cd "$tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=buildkit-exporter test CA" \
      -keyout ca-key.pem -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server-key.pem -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 365 \
      -extfile server.ext -out server-cert.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=buildkit-exporter" -keyout key.pem -out client.csr
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 365 \
      -extfile client.ext -out cert.pem
  ) >/dev/null 2>&1 || die "could not make test certificates with openssl"
  mkdir -p "$TLS_DIR"
  cp "$tmp"/{ca.pem,server-cert.pem,server-key.pem,cert.pem,key.pem} "$TLS_DIR/"
  chmod 600 "$TLS_DIR"/*key.pem
  rm -rf "$tmp"
}

# The 28.5 engine's client: a docker config dir whose cli-plugins/ holds buildx 0.29 (and the
# compose plugin of the 26.1 set: a config dir replaces ~/.docker/cli-plugins as a whole).
make_client_config() {
  local plugin="$ENGINE_PREFIX/usr/libexec/docker/cli-plugins/docker-buildx"
  local compose="$PREFIX/usr/libexec/docker/cli-plugins/docker-compose"
  [ -x "$plugin" ] || die "$plugin missing (run scripts/provision.sh)"
  [ -x "$compose" ] || die "$compose missing (run scripts/provision.sh)"
  mkdir -p "$CLIENT_CONFIG/cli-plugins"
  ln -sfn "$plugin" "$CLIENT_CONFIG/cli-plugins/docker-buildx"
  ln -sfn "$compose" "$CLIENT_CONFIG/cli-plugins/docker-compose"
  [ -f "$CLIENT_CONFIG/config.json" ] || printf '{}\n' >"$CLIENT_CONFIG/config.json"
  DOCKER_CONFIG="$CLIENT_CONFIG" "$DOCKER" buildx version >/dev/null 2>&1 \
    || die "docker buildx does not work with DOCKER_CONFIG=$CLIENT_CONFIG"
}

# The 28.5 engine's own bridge (the 26.1 one has docker0): BuildKit runs RUN steps on the bridge
# network, and dockerd -b wants the bridge to exist. Made here when missing, and recorded so that
# engine-down.sh deletes it.
make_bridge() {
  command -v ip >/dev/null 2>&1 || die "ip (iproute2) missing"
  if [ -e "/sys/class/net/$BRIDGE" ]; then
    log "bridge $BRIDGE present: $(ip -br -4 addr show dev "$BRIDGE" | awk '{print $3}')"
    return 0
  fi
  local net n
  if [ -z "$BRIDGE_ADDR" ]; then
    for n in $(seq 28 254); do
      if [ -z "$(routed "10.250.$n.1")" ]; then BRIDGE_ADDR="10.250.$n.1/24"; break; fi
    done
    [ -n "$BRIDGE_ADDR" ] || die "no unrouted 10.250.N.0/24 left: set BUILDKIT_EXPORTER_ENGINE_BRIDGE_ADDR"
  fi
  net="$(routed "${BRIDGE_ADDR%/*}")"
  [ -z "$net" ] || die "${BRIDGE_ADDR%/*} is already routed ($net): set BUILDKIT_EXPORTER_ENGINE_BRIDGE_ADDR"
  ip link add "$BRIDGE" type bridge || die "could not create bridge $BRIDGE"
  printf '%s\n' "$BRIDGE" >"$STATE/created-bridge"
  ip addr add "$BRIDGE_ADDR" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  log "created bridge $BRIDGE ($BRIDGE_ADDR)"
}

routed() { ip -4 route show to match "$1" | grep -v '^default' || true; } # $1: an address

# Something listens on loopback port $1.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- 1. an engine the user already has ----------------------------------------------------------
if [ -n "$ENGINE_VERSION" ]; then
  log "BUILDKIT_EXPORTER_ENGINE_VERSION=$ENGINE_VERSION: our own engine of that version"
elif [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "$OWN_HOST" ]; then
  api="$(server_api "")"
  if api_ok "$api"; then
    log "using the engine at DOCKER_HOST=$DOCKER_HOST (API $api)"
    ensure_image "$DOCKER_HOST"
    ensure_builder_image "$DOCKER_HOST"
    emit "$DOCKER_HOST" 0
    exit 0
  fi
  log "DOCKER_HOST=$DOCKER_HOST $(describe "$api"); trying others"
fi
if [ -z "$ENGINE_VERSION" ] && [ -S /var/run/docker.sock ]; then
  api="$(server_api unix:///var/run/docker.sock)"
  if api_ok "$api"; then
    log "using the engine at /var/run/docker.sock (API $api)"
    ensure_image unix:///var/run/docker.sock
    ensure_builder_image unix:///var/run/docker.sock
    emit unix:///var/run/docker.sock 0
    exit 0
  fi
  log "/var/run/docker.sock $(describe "$api"); trying our own engine"
fi

# --- 2. our own dockerd ----------------------------------------------------------------------------
mkdir -p "$STATE"
exec 9>"$STATE.lock"
flock -w 120 9 || die "could not lock $STATE.lock"

if [ -n "${CLIENT_CONFIG:-}" ]; then make_client_config; fi
if pid="$(own_pid)"; then
  log "reusing dockerd pid $pid from $PIDFILE"
  wait_ready "$pid"
else
  DOCKERD="$ENGINE_PREFIX/usr/sbin/dockerd"
  [ -x "$DOCKERD" ] || die "$DOCKERD missing (run scripts/provision.sh)"
  ENGINE_PATH="$ENGINE_PREFIX/usr/sbin:$PATH"
  NETWORK_ARGS=()
  # buildx starts container builders with --init: the engine needs a docker-init.
  INIT_ARGS=()
  if [ -x /usr/bin/tini-static ]; then INIT_ARGS=(--init-path /usr/bin/tini-static); fi
  if [ "$ENGINE_VERSION" = 28.5 ]; then
    # sid's containerd 2.1 and its shim; this machine's runc (sid's needs a newer glibc) first.
    ENGINE_PATH="$ENGINE_PREFIX/host-runc:$ENGINE_PREFIX/usr/sbin:$ENGINE_PREFIX/usr/bin:$PATH"
    [ -x "$ENGINE_PREFIX/host-runc/runc" ] || die "$ENGINE_PREFIX/host-runc/runc missing (run scripts/provision.sh)"
    NETWORK_ARGS=(--bridge "$BRIDGE")
  fi
  for b in containerd containerd-shim-runc-v2 runc; do
    PATH="$ENGINE_PATH" command -v "$b" >/dev/null 2>&1 || die "$b missing (run scripts/provision.sh)"
  done
  rm -f "$PIDFILE" "$SOCK" "$STATE/tls-port"
  mkdir -p "$STATE/data" "$STATE/exec"
  touch "$MARKER"
  if [ "$ENGINE_VERSION" = 28.5 ]; then
    # The containerd image store (Docker 29's default): images and build history of its own.
    printf '{"features":{"containerd-snapshotter":true}}\n' >"$STATE/daemon.json"
    make_bridge
  fi
  [ -f "$STATE/daemon.json" ] || printf '{}\n' >"$STATE/daemon.json"
  make_certs
  for _ in $(seq 20); do
    port_taken "$TLS_PORT" || break
    log "loopback port $TLS_PORT is taken; trying $((TLS_PORT + 1)) for the TLS listener"
    TLS_PORT=$((TLS_PORT + 1))
  done
  # The port it listens on with TLS, for the environment printed for this engine, now and later.
  printf '%s\n' "$TLS_PORT" >"$STATE/tls-port"
  log "starting dockerd $("$DOCKERD" --version | awk '{print $3}' | tr -d ,) on $OWN_HOST (log: $LOGFILE)"
  # Own data-root, exec-root, socket, pidfile and config. No iptables rules and no ip_forward
  # change, so the host's firewall and routing are left alone. The default bridge must exist
  # (`--bridge none` makes every RUN step fail with "network bridge not found", since BuildKit in
  # dockerd runs RUN steps on the bridge network), so dockerd creates docker0 if it is missing;
  # engine-down.sh deletes it again when it was created here.
  if [ -z "${BRIDGE:-}" ] && [ ! -e /sys/class/net/docker0 ]; then touch "$STATE/created-docker0"; fi
  PATH="$ENGINE_PATH" setsid "$DOCKERD" \
      --config-file "$STATE/daemon.json" \
      --data-root "$STATE/data" \
      --exec-root "$STATE/exec" \
      -H "$OWN_HOST" \
      -H "tcp://127.0.0.1:$TLS_PORT" --tlsverify --tlscacert "$TLS_DIR/ca.pem" \
      --tlscert "$TLS_DIR/server-cert.pem" --tlskey "$TLS_DIR/server-key.pem" \
      --pidfile "$PIDFILE" \
      --userland-proxy-path "$ENGINE_PREFIX/usr/sbin/docker-proxy" \
      --iptables=false --ip6tables=false --ip-forward=false "${NETWORK_ARGS[@]}" "${INIT_ARGS[@]}" \
      >>"$LOGFILE" 2>&1 </dev/null 9>&- &
  pid=$!
  wait_ready "$pid"
  log "dockerd pid $pid answers after ${SECONDS}s"
fi
ensure_image "$OWN_HOST"
ensure_builder_image "$OWN_HOST"
emit "$OWN_HOST" 1
