#!/usr/bin/env bash
# Starts a standalone buildkitd (the v0.32.2 that scripts/provision.sh builds) for the tests, on
# a unix socket and on loopback TCP with mutual TLS, unless ours from an earlier call still
# answers, and prints shell `export` lines on stdout (everything else goes to stderr):
#
#   eval "$(scripts/buildkitd-up.sh)"
#
#   BUILDKIT_EXPORTER_BUILDKITD_SOCK   its unix socket (no TLS)
#   BUILDKIT_EXPORTER_BUILDKITD_TCP    127.0.0.1:PORT, TLS with a client certificate required
#   BUILDKIT_EXPORTER_BUILDKITD_CERTS  dir with ca.pem, client.pem and client.key for it
#   BUILDKIT_EXPORTER_BUILDCTL         the buildctl of the same release
#
# scripts/buildkitd-down.sh stops it, by its PID file.
#
#   BUILDKIT_EXPORTER_TOOLS          prefix from provision.sh (default /opt/buildkit-exporter-tools)
#   BUILDKIT_EXPORTER_BUILDKITD_DIR  its state dir (default /tmp/buildkit-exporter-buildkitd)
#   BUILDKIT_EXPORTER_BUILDKITD_PORT its TLS port (default 23770; the next free one when taken)
set -euo pipefail

TAG=buildkitd-up
. "$(dirname "$0")/lib/buildkitd-env.sh"
START_TIMEOUT=60
PORT="${BUILDKIT_EXPORTER_BUILDKITD_PORT:-23770}"

[ -x "$BIN/buildkitd" ] && [ -x "$BIN/buildctl" ] || die "no buildkitd in $BIN (run scripts/provision.sh)"
command -v runc >/dev/null 2>&1 || die "buildkitd's OCI worker needs runc (apt package runc)"

answers() { # $1: address, then buildctl's TLS flags
  timeout 10 "$BIN/buildctl" --addr "$@" debug workers >/dev/null 2>&1
}
tls_flags() {
  printf '%s\n' --tlscacert "$STATE/tls/ca.pem" --tlscert "$STATE/tls/client.pem" --tlskey "$STATE/tls/client.key"
}

# A CA, a server certificate for 127.0.0.1 and a client certificate, all X.509 v3 (rustls refuses
# v1, which `openssl x509 -req` makes without an extension file).
make_pki() {
  local dir="$STATE/tls"
  [ -f "$dir/client.key" ] && return 0
  mkdir -p "$dir.new"
  (
    cd "$dir.new"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj /CN=buildkitd-test-ca \
      -keyout ca.key -out ca.pem 2>/dev/null
    for who in server client; do
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=buildkitd-test-$who" \
        -keyout "$who.key" -out "$who.csr" 2>/dev/null
    done
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    for who in server client; do
      openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$who.ext" -out "$who.pem" 2>/dev/null
    done
    rm -f ./*.csr ./*.ext ca.srl
  )
  rm -rf "$dir"
  mv "$dir.new" "$dir"
}

print_env() {
  printf 'export BUILDKIT_EXPORTER_BUILDKITD_SOCK=%q\n' "$SOCK"
  printf 'export BUILDKIT_EXPORTER_BUILDKITD_TCP=%q\n' "127.0.0.1:$(cat "$STATE/port")"
  printf 'export BUILDKIT_EXPORTER_BUILDKITD_CERTS=%q\n' "$STATE/tls"
  printf 'export BUILDKIT_EXPORTER_BUILDCTL=%q\n' "$BIN/buildctl"
}

if own_pid >/dev/null && answers "unix://$SOCK"; then
  log "buildkitd from an earlier call answers at unix://$SOCK"
  print_env
  exit 0
fi
if pid="$(own_pid)"; then
  log "our buildkitd ($pid) does not answer: stopping it"
  kill "$pid" 2>/dev/null || true
  sleep 1
fi

mkdir -p "$STATE/root"
make_pki
while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
printf '%s\n' "$PORT" >"$STATE/port"
rm -f "$SOCK"
log "starting buildkitd $("$BIN/buildkitd" --version | awk '{print $3}') at unix://$SOCK and tcp://127.0.0.1:$PORT (mTLS)"
setsid "$BIN/buildkitd" --root "$STATE/root" --oci-worker=true --containerd-worker=false \
  --addr "unix://$SOCK" --addr "tcp://127.0.0.1:$PORT" \
  --tlscacert "$STATE/tls/ca.pem" --tlscert "$STATE/tls/server.pem" --tlskey "$STATE/tls/server.key" \
  >"$LOGFILE" 2>&1 </dev/null &
printf '%s\n' "$!" >"$PIDFILE"

deadline=$((SECONDS + START_TIMEOUT))
mapfile -t flags < <(tls_flags)
until answers "unix://$SOCK" && answers "tcp://127.0.0.1:$PORT" "${flags[@]}"; do
  if ! own_pid >/dev/null; then
    tail -n 20 "$LOGFILE" >&2 || true
    die "buildkitd exited (log: $LOGFILE)"
  fi
  [ "$SECONDS" -lt "$deadline" ] || die "buildkitd did not answer within ${START_TIMEOUT}s (log: $LOGFILE)"
  sleep 0.5
done
log "buildkitd answers (pid $(cat "$PIDFILE"))"
print_env
