#!/usr/bin/env bash
# Makes sure a Docker Engine with BuildKit (API >= 1.41, engine >= 23) answers, plus the base
# image tinybase:latest (busybox, built locally: no registry needed), and prints shell `export`
# lines on stdout (everything else goes to stderr):
#
#   eval "$(scripts/engine-up.sh)"
#
# Order: an engine that already answers at $DOCKER_HOST, then /var/run/docker.sock, then our own
# dockerd from a previous call (state dir below), else a new dockerd from the prefix that
# scripts/provision.sh unpacked. Only in the last two cases BUILDKIT_EXPORTER_ENGINE_STARTED=1 is
# printed, and scripts/engine-down.sh stops it.
#
#   BUILDKIT_EXPORTER_TOOLS       prefix from provision.sh (default /opt/buildkit-exporter-tools)
#   BUILDKIT_EXPORTER_ENGINE_DIR  state dir of our own dockerd (default /tmp/buildkit-exporter-engine)
#   BUILDKIT_EXPORTER_ENGINE_TLS_PORT  loopback port of its TLS listener (default 23760)
set -euo pipefail

PREFIX="${BUILDKIT_EXPORTER_TOOLS:-/opt/buildkit-exporter-tools}"
TAG=engine-up
. "$(dirname "$0")/lib/engine-env.sh"
OWN_HOST="unix://$SOCK"
START_TIMEOUT="${BUILDKIT_EXPORTER_ENGINE_TIMEOUT:-60}"
MIN_API="1.41"
IMAGE="tinybase:latest"
TLS_DIR="$STATE/tls"
TLS_PORT="${BUILDKIT_EXPORTER_ENGINE_TLS_PORT:-23760}"

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

emit() { # $1: docker host, $2: started by us (0/1)
  if ! "$DOCKER" buildx version >/dev/null 2>&1; then
    log "WARNING: the docker CLI has no buildx plugin; run scripts/provision.sh"
  fi
  printf 'export DOCKER_HOST=%q\n' "$1"
  printf 'export DOCKER_BUILDKIT=1\n'
  if [ "$2" = 1 ]; then printf 'export BUILDKIT_EXPORTER_ENGINE_STARTED=1\n'; fi
  # Our own engine also listens with TLS (client certificate required), for the TLS tests.
  if [ "$2" = 1 ] && [ -f "$TLS_DIR/key.pem" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--tlsverify"; then
    printf 'export BUILDKIT_EXPORTER_ENGINE_TLS_HOST=%q\n' "tcp://127.0.0.1:$TLS_PORT"
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

# --- 1. an engine the user already has ----------------------------------------------------------
if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "$OWN_HOST" ]; then
  api="$(server_api "")"
  if api_ok "$api"; then
    log "using the engine at DOCKER_HOST=$DOCKER_HOST (API $api)"
    ensure_image "$DOCKER_HOST"
    emit "$DOCKER_HOST" 0
    exit 0
  fi
  log "DOCKER_HOST=$DOCKER_HOST $(describe "$api"); trying others"
fi
if [ -S /var/run/docker.sock ]; then
  api="$(server_api unix:///var/run/docker.sock)"
  if api_ok "$api"; then
    log "using the engine at /var/run/docker.sock (API $api)"
    ensure_image unix:///var/run/docker.sock
    emit unix:///var/run/docker.sock 0
    exit 0
  fi
  log "/var/run/docker.sock $(describe "$api"); trying our own engine"
fi

# --- 2. our own dockerd ----------------------------------------------------------------------------
mkdir -p "$STATE"
exec 9>"$STATE.lock"
flock -w 120 9 || die "could not lock $STATE.lock"

if pid="$(own_pid)"; then
  log "reusing dockerd pid $pid from $PIDFILE"
  wait_ready "$pid"
else
  DOCKERD="$PREFIX/usr/sbin/dockerd"
  [ -x "$DOCKERD" ] || die "$DOCKERD missing (run scripts/provision.sh)"
  for b in containerd containerd-shim-runc-v2 runc; do
    command -v "$b" >/dev/null 2>&1 || die "$b missing (run scripts/provision.sh)"
  done
  rm -f "$PIDFILE" "$SOCK"
  mkdir -p "$STATE/data" "$STATE/exec"
  touch "$MARKER"
  [ -f "$STATE/daemon.json" ] || printf '{}\n' >"$STATE/daemon.json"
  make_certs
  log "starting dockerd $("$DOCKERD" --version | awk '{print $3}' | tr -d ,) on $OWN_HOST (log: $LOGFILE)"
  # Own data-root, exec-root, socket, pidfile and config. No iptables rules and no ip_forward
  # change, so the host's firewall and routing are left alone. The default bridge must exist
  # (`--bridge none` makes every RUN step fail with "network bridge not found", since BuildKit in
  # dockerd runs RUN steps on the bridge network), so dockerd creates docker0 if it is missing;
  # engine-down.sh deletes it again when it was created here.
  if [ ! -e /sys/class/net/docker0 ]; then touch "$STATE/created-docker0"; fi
  PATH="$PREFIX/usr/sbin:$PATH" setsid "$DOCKERD" \
      --config-file "$STATE/daemon.json" \
      --data-root "$STATE/data" \
      --exec-root "$STATE/exec" \
      -H "$OWN_HOST" \
      -H "tcp://127.0.0.1:$TLS_PORT" --tlsverify --tlscacert "$TLS_DIR/ca.pem" \
      --tlscert "$TLS_DIR/server-cert.pem" --tlskey "$TLS_DIR/server-key.pem" \
      --pidfile "$PIDFILE" \
      --userland-proxy-path "$PREFIX/usr/sbin/docker-proxy" \
      --iptables=false --ip6tables=false --ip-forward=false \
      >>"$LOGFILE" 2>&1 </dev/null 9>&- &
  pid=$!
  wait_ready "$pid"
  log "dockerd pid $pid answers after ${SECONDS}s"
fi
ensure_image "$OWN_HOST"
emit "$OWN_HOST" 1
