#!/usr/bin/env bash
# Installs everything the tests need, idempotently (skips what is already there).
#
#   * Debian 12 packages: containerd runc iptables busybox-static prometheus (+ promtool)
#     chromium chromium-driver curl ca-certificates
#   * Debian 13's docker.io (Docker Engine 26.1, BuildKit v0.13), docker-buildx and docker-cli
#     (Debian 13 ships the CLI separately; used only when no `docker` is on PATH), unpacked
#     (not installed) into a private prefix: ${BUILDKIT_EXPORTER_TOOLS:-/opt/buildkit-exporter-tools}
#   * the buildx plugin for the docker CLI (${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins), so that
#     `docker build` runs through BuildKit
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
APT_PACKAGES=(containerd runc iptables busybox-static prometheus chromium chromium-driver curl ca-certificates)

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

# --- 2. Debian 13 docker.io + docker-buildx + docker-cli, unpacked into $PREFIX -----------------
MARKER="$PREFIX/.buildkit-exporter-unpacked"
NEXT_PACKAGES=(docker.io docker-buildx docker-cli)
REQUIRED_FILES=(usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/docker usr/libexec/docker/cli-plugins/docker-buildx)

unpacked() {
  local f
  [ -f "$MARKER" ] || return 1
  for f in "${REQUIRED_FILES[@]}"; do [ -x "$PREFIX/$f" ] || return 1; done
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

if unpacked; then
  log "already unpacked in $PREFIX: $(tr '\n' ' ' <"$MARKER")"
else
  uri="$(mirror_uri)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/lists/partial" "$tmp/archives/partial" "$tmp/debs"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$uri" "$NEXT_SUITE" \
    >"$tmp/sources.list"
  apt_opts=(-q -o "Dir::Etc::sourcelist=$tmp/sources.list" -o Dir::Etc::sourceparts=-
            -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache::Archives=$tmp/archives"
            -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
  log "fetching ${NEXT_PACKAGES[*]} from Debian $NEXT_SUITE"
  apt-get "${apt_opts[@]}" update >&2
  (cd "$tmp/debs" && apt-get "${apt_opts[@]}" download "${NEXT_PACKAGES[@]}" >&2)
  mkdir -p "$PREFIX"
  rm -f "$MARKER"
  for deb in "$tmp"/debs/*.deb; do
    log "unpacking $(basename "$deb") into $PREFIX"
    dpkg -x "$deb" "$PREFIX"
  done
  for f in "${REQUIRED_FILES[@]}"; do
    [ -x "$PREFIX/$f" ] || die "unpacked packages lack $f"
  done
  for deb in "$tmp"/debs/*.deb; do
    dpkg-deb -W --showformat='${Package}=${Version}\n' "$deb"
  done >"$MARKER"
  rm -rf "$tmp"
  trap - EXIT
fi

# --- 3. docker CLI ------------------------------------------------------------------------------
if ! command -v docker >/dev/null 2>&1; then
  [ -x "$PREFIX/usr/bin/docker" ] || die "no docker CLI on PATH and none in $PREFIX/usr/bin"
  log "no docker CLI on PATH: linking /usr/local/bin/docker -> $PREFIX/usr/bin/docker"
  ln -sf "$PREFIX/usr/bin/docker" /usr/local/bin/docker
fi

# --- 4. buildx plugin for the docker CLI ---------------------------------------------------------
plugin_src="$PREFIX/usr/libexec/docker/cli-plugins/docker-buildx"
plugin_dir="${DOCKER_CONFIG:-${HOME:-/root}/.docker}/cli-plugins"
if [ -x "$plugin_dir/docker-buildx" ] && cmp -s "$plugin_src" "$plugin_dir/docker-buildx"; then
  log "buildx plugin already in $plugin_dir"
elif docker buildx version >/dev/null 2>&1; then
  log "docker CLI already has a buildx plugin: $(docker buildx version 2>/dev/null | head -n1)"
else
  log "installing buildx plugin into $plugin_dir"
  mkdir -p "$plugin_dir"
  install -m 0755 "$plugin_src" "$plugin_dir/docker-buildx.tmp.$$"
  mv -f "$plugin_dir/docker-buildx.tmp.$$" "$plugin_dir/docker-buildx"
fi
docker buildx version >/dev/null 2>&1 || die "docker buildx does not work after installing the plugin"

log "done: $(docker buildx version 2>/dev/null | head -n1); dockerd $("$PREFIX/usr/sbin/dockerd" --version 2>/dev/null); $(prometheus --version 2>&1 | head -n1)"
