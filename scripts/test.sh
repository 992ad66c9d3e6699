#!/usr/bin/env bash
# The test command. Installs what the tests need (idempotent), makes sure a real Docker Engine
# with BuildKit answers (starting a private one when none does), runs every test, then runs
# every test again with all cores busy (scripts/loaded.sh), and stops the engine again if it
# started it. Extra arguments go to `cargo test` (and skip the loaded run);
# BUILDKIT_EXPORTER_SKIP_LOADED=1 skips it too.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/provision.sh
eval "$(scripts/engine-up.sh)"
if [ "${BUILDKIT_EXPORTER_ENGINE_STARTED:-}" = 1 ] && [ -z "${BUILDKIT_EXPORTER_KEEP_ENGINE:-}" ]; then
  trap 'scripts/engine-down.sh' EXIT
fi
export DOCKER_HOST

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked "$@"
if [ "$#" -eq 0 ] && [ -z "${BUILDKIT_EXPORTER_SKIP_LOADED:-}" ]; then
  scripts/loaded.sh cargo test --locked
fi
