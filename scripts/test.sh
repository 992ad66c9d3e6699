#!/usr/bin/env bash
# The test command. Installs what the tests need (idempotent), makes sure a real Docker Engine
# with BuildKit answers (starting a private one when none does), runs every test, then runs
# every test again with all cores busy (scripts/loaded.sh), and stops the engine again if it
# started it. A standalone buildkitd (BuildKit v0.32.2, scripts/buildkitd-up.sh) runs beside the
# engine for the whole run, for tests/buildkitd.rs. Then the suites that need an engine run once more against a private Docker Engine
# 28.5 with the containerd image store (BuildKit v0.25, buildx 0.29 as the client), started and
# stopped here. Extra arguments go to `cargo test` (and skip both extra passes);
# BUILDKIT_EXPORTER_SKIP_LOADED=1 skips the loaded run, BUILDKIT_EXPORTER_SKIP_ENGINE_28_5=1 the
# 28.5 one. BUILDKIT_EXPORTER_KEEP_ENGINE=1 leaves the engines running.
#
# A bare `cargo test` ignores the tests that need the engine, Prometheus, Chromium or docker
# compose, each saying what it needs; every pass here runs them (`--include-ignored`).
set -euo pipefail
cd "$(dirname "$0")/.."

# The suites that run real builds on the engine.
ENGINE_SUITES=(--test engine --test faults --test cli --test status_page --test prometheus --test container_builders)
# Test binaries' arguments for every test: the ignored ones too, but the fixture recorder, which
# rewrites tests/fixtures on purpose only (see tests/record.rs).
EVERY_TEST=(--include-ignored --skip record_fixture_builds)

scripts/provision.sh
# Not `eval "$(...)"`, whose status is eval's: a failed engine-up.sh must stop here.
engine_env="$(scripts/engine-up.sh)"
eval "$engine_env"
stop_engine=""
if [ "${BUILDKIT_EXPORTER_ENGINE_STARTED:-}" = 1 ] && [ -z "${BUILDKIT_EXPORTER_KEEP_ENGINE:-}" ]; then
  stop_engine=scripts/engine-down.sh
fi
trap '[ -z "$stop_engine" ] || $stop_engine; scripts/buildkitd-down.sh' EXIT
buildkitd_env="$(scripts/buildkitd-up.sh)"
eval "$buildkitd_env"
export DOCKER_HOST BUILDKIT_EXPORTER_BUILDKITD_SOCK BUILDKIT_EXPORTER_BUILDKITD_TCP BUILDKIT_EXPORTER_BUILDKITD_CERTS \
  BUILDKIT_EXPORTER_BUILDCTL

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
if [ "$#" -eq 0 ]; then
  cargo test --locked -- "${EVERY_TEST[@]}"
else
  # The tests the arguments name, ignored ones included (after their own `--`, if they have one).
  case " $* " in
    *" -- "*) cargo test --locked "$@" --include-ignored ;;
    *) cargo test --locked "$@" -- --include-ignored ;;
  esac
fi
if [ "$#" -eq 0 ] && [ -z "${BUILDKIT_EXPORTER_SKIP_LOADED:-}" ]; then
  scripts/loaded.sh cargo test --locked -- "${EVERY_TEST[@]}"
fi

if [ "$#" -eq 0 ] && [ -z "${BUILDKIT_EXPORTER_SKIP_ENGINE_28_5:-}" ] \
  && [ "${BUILDKIT_EXPORTER_ENGINE_VERSION:-}" != 28.5 ]; then
  (
    started=$SECONDS
    unset BUILDKIT_EXPORTER_ENGINE_STARTED BUILDKIT_EXPORTER_ENGINE_TLS_HOST BUILDKIT_EXPORTER_ENGINE_TLS_CERTS
    export BUILDKIT_EXPORTER_ENGINE_VERSION=28.5
    engine_env="$(scripts/engine-up.sh)"
    eval "$engine_env"
    if [ -z "${BUILDKIT_EXPORTER_KEEP_ENGINE:-}" ]; then
      trap 'scripts/engine-down.sh' EXIT
    fi
    echo "[test] the engine suites against Docker Engine 28.5 (containerd image store) at $DOCKER_HOST" >&2
    cargo test --locked "${ENGINE_SUITES[@]}" -- --include-ignored
    echo "[test] Docker Engine 28.5 pass: $((SECONDS - started)) s" >&2
  )
fi
