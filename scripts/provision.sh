#!/usr/bin/env bash
# Installs everything the tests need, idempotently (skips what is already there).
#
#   * Debian 12 packages: containerd runc iptables busybox-static prometheus (+ promtool)
#     chromium chromium-driver curl ca-certificates stress-ng openssl
#   * Debian 13's docker.io (Docker Engine 26.1, BuildKit v0.13), docker-buildx, docker-cli
#     (Debian 13 ships the CLI separately; used only when no `docker` is on PATH) and
#     docker-compose (Compose v2, for checking deploy/docker-compose.yml), unpacked (not
#     installed) into a private prefix: ${BUILDKIT_EXPORTER_TOOLS:-/opt/buildkit-exporter-tools}
#   * the buildx and compose plugins for the docker CLI (${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins),
#     so that `docker build` runs through BuildKit and `docker compose` works
#
# Runs as root, non-interactively. The Debian mirror is read from the machine's own apt sources.
set -euo pipefail

PREFIX="${BUILDKIT_EXPORTER_TOOLS:-/opt/buildkit-exporter-tools}"
NEXT_SUITE="${BUILDKIT_EXPORTER_ENGINE_SUITE:-trixie}"
export DEBIAN_FRONTEND=noninteractive
export CI="${CI:-true}"

log() { printf '[provision] %s\n' "$*" >&2; }
die() { printf '[provision] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
exec </dev/null

# --- 1. Debian packages of this machine -------------------------------------------------------
APT_PACKAGES=(containerd runc iptables busybox-static prometheus chromium chromium-driver curl ca-certificates stress-ng openssl)

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

# --- 2. Debian 13 packages, unpacked (not installed) into $PREFIX --------------------------------
# Each set has its own marker, so adding a set later does not unpack the others again (over an
# engine that may be running from this prefix).
ENGINE_PACKAGES=(docker.io docker-buildx docker-cli)
ENGINE_FILES=(usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/docker usr/libexec/docker/cli-plugins/docker-buildx)
COMPOSE_PACKAGES=(docker-compose)
COMPOSE_FILES=(usr/libexec/docker/cli-plugins/docker-compose)

unpacked() { # $1: marker, then the required files
  local marker="$1" f
  shift
  [ -f "$marker" ] || return 1
  for f in "$@"; do [ -x "$PREFIX/$f" ] || return 1; done
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

# Fetches Debian $NEXT_SUITE packages and unpacks them into $PREFIX, unless already done.
# $1: marker file name, $2: name of an array of packages, $3: name of an array of required files.
unpack_next() {
  local marker="$PREFIX/$1" uri tmp deb f
  local -n packages="$2" files="$3"
  if unpacked "$marker" "${files[@]}"; then
    log "already unpacked in $PREFIX: $(tr '\n' ' ' <"$marker")"
    return 0
  fi
  uri="$(mirror_uri)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/lists/partial" "$tmp/archives/partial" "$tmp/debs"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$uri" "$NEXT_SUITE" \
    >"$tmp/sources.list"
  local apt_opts=(-q -o "Dir::Etc::sourcelist=$tmp/sources.list" -o Dir::Etc::sourceparts=-
                  -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache::Archives=$tmp/archives"
                  -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
  log "fetching ${packages[*]} from Debian $NEXT_SUITE"
  apt-get "${apt_opts[@]}" update >&2
  (cd "$tmp/debs" && apt-get "${apt_opts[@]}" download "${packages[@]}" >&2)
  mkdir -p "$PREFIX"
  rm -f "$marker"
  for deb in "$tmp"/debs/*.deb; do
    log "unpacking $(basename "$deb") into $PREFIX"
    dpkg -x "$deb" "$PREFIX"
  done
  for f in "${files[@]}"; do
    [ -x "$PREFIX/$f" ] || die "unpacked packages lack $f"
  done
  for deb in "$tmp"/debs/*.deb; do
    dpkg-deb -W --showformat='${Package}=${Version}\n' "$deb"
  done >"$marker"
  rm -rf "$tmp"
  trap - EXIT
}

# The engine's marker keeps its original name, so existing prefixes stay valid.
unpack_next .buildkit-exporter-unpacked ENGINE_PACKAGES ENGINE_FILES
unpack_next .buildkit-exporter-compose COMPOSE_PACKAGES COMPOSE_FILES

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
