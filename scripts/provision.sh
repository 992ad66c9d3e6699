#!/usr/bin/env bash
# Installs everything the tests need, idempotently (skips what is already there).
#
#   * Debian 12 packages: containerd runc iptables busybox-static prometheus (+ promtool)
#     chromium chromium-driver curl ca-certificates stress-ng openssl tini (its tini-static is the
#     engines' docker-init, which buildx's container builders need) python3-venv docker-registry
#     (an image registry the tests start on loopback, so that a buildkitd's base image can change)
#   * kubernetes-validate (PyPI, pinned), in a venv at $PREFIX/kubernetes-validate: it checks the
#     Kubernetes manifests against the 1.31 schema, which it carries (no cluster needed)
#   * Debian 13's docker.io (Docker Engine 26.1, BuildKit v0.13), docker-buildx, docker-cli
#     (Debian 13 ships the CLI separately; used only when no `docker` is on PATH) and
#     docker-compose (Compose v2, for checking deploy/docker-compose.yml), unpacked (not
#     installed) into a private prefix: ${BUILDKIT_EXPORTER_TOOLS:-/opt/buildkit-exporter-tools}
#   * the buildx and compose plugins for the docker CLI (${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins),
#     so that `docker build` runs through BuildKit and `docker compose` works
#   * Debian sid's docker.io 28.5 (Docker Engine 28.5, BuildKit v0.25), docker-buildx 0.29 and
#     containerd 2.1, unpacked into $PREFIX/engine-28.5 (the second engine of the tests, started
#     by `BUILDKIT_EXPORTER_ENGINE_VERSION=28.5 scripts/engine-up.sh` with the containerd image
#     store; its buildx 0.29 is the client for it, through DOCKER_CONFIG). sid's runc needs a newer
#     glibc than Debian 12's: $PREFIX/engine-28.5/host-runc/runc links to this machine's runc.
#   * Debian sid's prometheus and promtool 3.5, unpacked into $PREFIX/prometheus-3.5
#     ($PREFIX/prometheus-3.5/usr/bin/{prometheus,promtool}); the Debian 12 ones (2.42) stay the
#     ones on PATH.
#   * a standalone BuildKit v0.32.2 (buildkitd and buildctl), built once per machine from the
#     source tarball beside the project (../shared/buildkit/buildkit-v0.32.2.tar.gz, with its
#     vendor/ tree, so offline) with Debian sid's Go 1.26 (unpacked into $PREFIX/go-1.26), into
#     $PREFIX/buildkit-v0.32.2/bin. Kept as long as the tarball's checksum matches its marker.
#
# Runs as root, non-interactively. The Debian mirror is read from the machine's own apt sources.
# sid moves: a fresh machine gets whatever sid has then, and the unpacked versions are checked
# (docker.io 28.5.x, prometheus 3.5.x); an unpacked prefix is kept as it is.
set -euo pipefail

PREFIX="${BUILDKIT_EXPORTER_TOOLS:-/opt/buildkit-exporter-tools}"
NEXT_SUITE="${BUILDKIT_EXPORTER_ENGINE_SUITE:-trixie}"
SID_SUITE=sid
export DEBIAN_FRONTEND=noninteractive
export CI="${CI:-true}"

log() { printf '[provision] %s\n' "$*" >&2; }
die() { printf '[provision] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
exec </dev/null

# --- 1. Debian packages of this machine -------------------------------------------------------
APT_PACKAGES=(containerd runc iptables busybox-static prometheus chromium chromium-driver curl ca-certificates stress-ng openssl tini python3-venv
  docker-registry)

is_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  is_installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
else
  log "apt packages already installed"
fi

# --- 2. Debian 13 and sid packages, unpacked (not installed) below $PREFIX ---------------------------
# Each set has its own marker, so adding a set later does not unpack the others again (over an
# engine that may be running from this prefix).
ENGINE_PACKAGES=(docker.io docker-buildx docker-cli)
ENGINE_FILES=(usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/docker usr/libexec/docker/cli-plugins/docker-buildx)
COMPOSE_PACKAGES=(docker-compose)
COMPOSE_FILES=(usr/libexec/docker/cli-plugins/docker-compose)
# The 28.5 set has its own prefix: its dockerd, containerd and plugins must not replace 26.1's.
ENGINE28_DIR=engine-28.5
ENGINE28_PACKAGES=(docker.io docker-buildx containerd)
ENGINE28_FILES=(usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/containerd usr/bin/containerd-shim-runc-v2
                usr/libexec/docker/cli-plugins/docker-buildx)
ENGINE28_VERSIONS=(docker.io=28.5.)
PROM3_DIR=prometheus-3.5
PROM3_PACKAGES=(prometheus promtool)
PROM3_FILES=(usr/bin/prometheus usr/bin/promtool)
PROM3_VERSIONS=(prometheus=3.5. promtool=3.5.)
NO_VERSIONS=()

unpacked() { # $1: target dir, $2: marker, then the required files
  local dir="$1" marker="$2" f
  shift 2
  [ -f "$marker" ] || return 1
  for f in "$@"; do [ -x "$dir/$f" ] || return 1; done
}

mirror_uri() {
  # First URI of the machine's Debian (non-security) apt source; deb822 first, legacy list second.
  local uri=""
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    uri="$(awk '
      /^[[:space:]]*$/ { if (u != "" && s !~ /-security/) { print u; exit } u = ""; s = ""; next }
      /^URIs:/   { u = $2 }
      /^Suites:/ { s = $0 }
      END { if (u != "" && s !~ /-security/) print u }' /etc/apt/sources.list.d/debian.sources | head -n1)"
  fi
  if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
    uri="$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
      /etc/apt/sources.list | head -n1)"
  fi
  [ -n "$uri" ] || die "cannot find a Debian mirror URI in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
  printf '%s\n' "${uri%/}"
}

# One temporary apt state per suite and run (package lists fetched once), removed at exit.
APT_TMP=""
cleanup() { if [ -n "$APT_TMP" ]; then rm -rf "$APT_TMP"; fi; }
trap cleanup EXIT
apt_opts_for() { # $1: suite; sets the array apt_opts, fetching the suite's lists on first use
  local suite="$1" dir uri
  [ -n "$APT_TMP" ] || APT_TMP="$(mktemp -d)"
  dir="$APT_TMP/$suite"
  apt_opts=(-q -o "Dir::Etc::sourcelist=$dir/sources.list" -o Dir::Etc::sourceparts=-
            -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache::Archives=$dir/archives"
            -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
  [ -f "$dir/.updated" ] && return 0
  uri="$(mirror_uri)"
  mkdir -p "$dir/lists/partial" "$dir/archives/partial"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$uri" "$suite" \
    >"$dir/sources.list"
  log "fetching the package lists of Debian $suite"
  apt-get "${apt_opts[@]}" update >&2
  touch "$dir/.updated"
}

# Fetches Debian packages and unpacks them, unless already done. $1: suite, $2: target dir,
# $3: marker file name (in the target dir), $4: name of an array of packages, $5: name of an array
# of required files, $6: name of an array of PACKAGE=VERSION-PREFIX the fetched packages must match.
unpack_set() {
  local suite="$1" dir="$2" marker="$2/$3" deb f want pkg ver debs
  local -n packages="$4" files="$5" versions="$6"
  if unpacked "$dir" "$marker" "${files[@]}"; then
    log "already unpacked in $dir: $(tr '\n' ' ' <"$marker")"
    return 0
  fi
  local apt_opts
  apt_opts_for "$suite"
  debs="$(mktemp -d "$APT_TMP/debs.XXXXXX")"
  log "fetching ${packages[*]} from Debian $suite"
  (cd "$debs" && apt-get "${apt_opts[@]}" download "${packages[@]}" >&2)
  for want in "${versions[@]}"; do
    pkg="${want%%=*}"
    ver="$(dpkg-deb -W --showformat='${Version}' "$debs/${pkg}"_*.deb)"
    ver="${ver#*:}"
    case "$ver" in
      "${want#*=}"*) ;;
      *) die "Debian $suite now has $pkg $ver, not ${want#*=}x: update scripts/provision.sh (and the engine version the tests name)" ;;
    esac
  done
  mkdir -p "$dir"
  rm -f "$marker"
  for deb in "$debs"/*.deb; do
    log "unpacking $(basename "$deb") into $dir"
    dpkg -x "$deb" "$dir"
  done
  for f in "${files[@]}"; do
    [ -x "$dir/$f" ] || die "unpacked packages lack $f"
  done
  for deb in "$debs"/*.deb; do
    dpkg-deb -W --showformat='${Package}=${Version}\n' "$deb"
  done >"$marker"
  rm -rf "$debs"
}

# The engine's marker keeps its original name, so existing prefixes stay valid.
unpack_set "$NEXT_SUITE" "$PREFIX" .buildkit-exporter-unpacked ENGINE_PACKAGES ENGINE_FILES NO_VERSIONS
unpack_set "$NEXT_SUITE" "$PREFIX" .buildkit-exporter-compose COMPOSE_PACKAGES COMPOSE_FILES NO_VERSIONS
unpack_set "$SID_SUITE" "$PREFIX/$ENGINE28_DIR" .buildkit-exporter-unpacked ENGINE28_PACKAGES ENGINE28_FILES \
  ENGINE28_VERSIONS
unpack_set "$SID_SUITE" "$PREFIX/$PROM3_DIR" .buildkit-exporter-unpacked PROM3_PACKAGES PROM3_FILES PROM3_VERSIONS
# sid's runc needs glibc 2.38; dockerd 28.5 finds this machine's runc first (engine-up.sh puts this
# dir first on its PATH).
host_runc="$(command -v runc || true)"
[ -n "$host_runc" ] || die "runc missing (apt package runc)"
if [ "$(readlink "$PREFIX/$ENGINE28_DIR/host-runc/runc" 2>/dev/null)" != "$host_runc" ]; then
  mkdir -p "$PREFIX/$ENGINE28_DIR/host-runc"
  ln -sfn "$host_runc" "$PREFIX/$ENGINE28_DIR/host-runc/runc"
fi

# --- 2b. a standalone BuildKit, built from source once per machine ------------------------------
GO_DIR=go-1.26
GO_PACKAGES=(golang-1.26-go golang-1.26-src)
GO_FILES=(usr/lib/go-1.26/bin/go)
BUILDKIT_VERSION=v0.32.2
BUILDKIT_REVISION=991535e0973488b6a429096d21fa13f81f2d89d8
BUILDKIT_TARBALL="${BUILDKIT_EXPORTER_BUILDKIT_TARBALL:-$(cd "$(dirname "$0")/.." && pwd)/../shared/buildkit/buildkit-$BUILDKIT_VERSION.tar.gz}"
BUILDKIT_DIR="$PREFIX/buildkit-$BUILDKIT_VERSION"
if [ ! -f "$BUILDKIT_TARBALL" ]; then
  die "BuildKit's source tarball is missing: $BUILDKIT_TARBALL (set BUILDKIT_EXPORTER_BUILDKIT_TARBALL)"
fi
tarball_sum="$(sha256sum "$BUILDKIT_TARBALL" | cut -d' ' -f1)"
if [ -x "$BUILDKIT_DIR/bin/buildkitd" ] && [ -x "$BUILDKIT_DIR/bin/buildctl" ] \
  && [ "$(cat "$BUILDKIT_DIR/.built-from" 2>/dev/null)" = "$tarball_sum" ]; then
  log "BuildKit $BUILDKIT_VERSION already built in $BUILDKIT_DIR/bin"
else
  unpack_set "$SID_SUITE" "$PREFIX/$GO_DIR" .buildkit-exporter-unpacked GO_PACKAGES GO_FILES NO_VERSIONS
  build_tmp="$(mktemp -d)"
  log "building BuildKit $BUILDKIT_VERSION (buildkitd, buildctl) from $(basename "$BUILDKIT_TARBALL"): a few minutes, once"
  tar -xzf "$BUILDKIT_TARBALL" -C "$build_tmp"
  mkdir -p "$BUILDKIT_DIR/bin.new"
  (
    cd "$build_tmp/buildkit-${BUILDKIT_VERSION#v}"
    export PATH="$PREFIX/$GO_DIR/usr/lib/go-1.26/bin:$PATH" GOFLAGS=-mod=vendor CGO_ENABLED=0 GOPROXY=off \
      GOTOOLCHAIN=local GOCACHE="$build_tmp/gocache" GOPATH="$build_tmp/gopath"
    go build -o "$BUILDKIT_DIR/bin.new/" \
      -ldflags "-X github.com/moby/buildkit/version.Version=$BUILDKIT_VERSION -X github.com/moby/buildkit/version.Revision=$BUILDKIT_REVISION" \
      ./cmd/buildkitd ./cmd/buildctl >&2
  )
  rm -rf "$BUILDKIT_DIR/bin" "$build_tmp"
  mv "$BUILDKIT_DIR/bin.new" "$BUILDKIT_DIR/bin"
  printf '%s\n' "$tarball_sum" >"$BUILDKIT_DIR/.built-from"
fi
"$BUILDKIT_DIR/bin/buildkitd" --version | grep -q "$BUILDKIT_VERSION" \
  || die "$BUILDKIT_DIR/bin/buildkitd does not report $BUILDKIT_VERSION"

# --- 2c. kubernetes-validate, in a venv of its own ---------------------------------------------------
KUBE_VALIDATE_VERSION=1.37.0
KUBE_VALIDATE="$PREFIX/kubernetes-validate/bin/kubernetes-validate"
if [ -x "$KUBE_VALIDATE" ] && [ "$("$KUBE_VALIDATE" --version 2>/dev/null)" = "$KUBE_VALIDATE_VERSION" ]; then
  log "kubernetes-validate $KUBE_VALIDATE_VERSION already in $PREFIX/kubernetes-validate"
else
  log "installing kubernetes-validate $KUBE_VALIDATE_VERSION into $PREFIX/kubernetes-validate"
  rm -rf "$PREFIX/kubernetes-validate"
  # Debian's python3, whatever else is first on PATH.
  /usr/bin/python3 -m venv "$PREFIX/kubernetes-validate"
  "$PREFIX/kubernetes-validate/bin/pip" install -q "kubernetes-validate==$KUBE_VALIDATE_VERSION" >&2 \
    || die "pip could not install kubernetes-validate"
fi
[ "$("$KUBE_VALIDATE" --version)" = "$KUBE_VALIDATE_VERSION" ] || die "kubernetes-validate is not $KUBE_VALIDATE_VERSION"

# --- 3. docker CLI ------------------------------------------------------------------------------
if ! command -v docker >/dev/null 2>&1; then
  [ -x "$PREFIX/usr/bin/docker" ] || die "no docker CLI on PATH and none in $PREFIX/usr/bin"
  log "no docker CLI on PATH: linking /usr/local/bin/docker -> $PREFIX/usr/bin/docker"
  ln -sf "$PREFIX/usr/bin/docker" /usr/local/bin/docker
fi

# --- 4. buildx and compose plugins for the docker CLI -----------------------------------------------
plugin_dir="${DOCKER_CONFIG:-${HOME:-/root}/.docker}/cli-plugins"
for plugin in buildx compose; do
  plugin_src="$PREFIX/usr/libexec/docker/cli-plugins/docker-$plugin"
  if [ -x "$plugin_dir/docker-$plugin" ] && cmp -s "$plugin_src" "$plugin_dir/docker-$plugin"; then
    log "$plugin plugin already in $plugin_dir"
  elif docker "$plugin" version >/dev/null 2>&1; then
    log "docker CLI already has a $plugin plugin: $(docker "$plugin" version 2>/dev/null | head -n1)"
  else
    log "installing $plugin plugin into $plugin_dir"
    mkdir -p "$plugin_dir"
    install -m 0755 "$plugin_src" "$plugin_dir/docker-$plugin.tmp.$$"
    mv -f "$plugin_dir/docker-$plugin.tmp.$$" "$plugin_dir/docker-$plugin"
  fi
  docker "$plugin" version >/dev/null 2>&1 || die "docker $plugin does not work after installing the plugin"
done

log "done: $(docker buildx version 2>/dev/null | head -n1); $(docker compose version 2>/dev/null | head -n1); dockerd $("$PREFIX/usr/sbin/dockerd" --version 2>/dev/null); $(prometheus --version 2>&1 | head -n1)"
log "done (engine 28.5 set in $PREFIX/$ENGINE28_DIR): dockerd $("$PREFIX/$ENGINE28_DIR/usr/sbin/dockerd" --version 2>/dev/null); $("$PREFIX/$ENGINE28_DIR/usr/libexec/docker/cli-plugins/docker-buildx" version 2>/dev/null | head -n1); $("$PREFIX/$ENGINE28_DIR/usr/bin/containerd" --version 2>/dev/null)"
log "done (standalone BuildKit in $BUILDKIT_DIR/bin): $("$BUILDKIT_DIR/bin/buildkitd" --version)"
log "done (Prometheus 3 in $PREFIX/$PROM3_DIR/usr/bin): $("$PREFIX/$PROM3_DIR/usr/bin/prometheus" --version 2>&1 | head -n1); $("$PREFIX/$PROM3_DIR/usr/bin/promtool" --version 2>&1 | head -n1)"
