#!/usr/bin/env bash
# The test command. Installs what the tests need (idempotent), makes sure a real Docker Engine
# with BuildKit answers (starting a private one when none does), runs every test, and stops the
# engine again if it started it. Extra arguments go to `cargo test`.
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
