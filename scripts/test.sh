#!/usr/bin/env bash
# Runs the whole test suite: unit tests, emulator tests, examples and doc tests.
#
# Starts the Cognito emulators (localstack/start.sh: moto on 4566, cognito-local on 9229) when
# none answers, and stops afterwards those it started. Emulator tests never skip: without an
# emulator they fail and say so. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The fleet-mode tests start redis-servers of their own, the dashboard test a Prometheus.
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
if [ -n "$missing" ]; then
    echo "installing$missing (Debian packages) for the fleet-mode and dashboard tests" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >&2
fi

started=""
cleanup() {
    [ -z "$started" ] || EMULATOR="$started" ./localstack/stop.sh
}
trap cleanup EXIT

# Starts one emulator unless one answers already; sets $endpoint.
start() {
    local pidfile="localstack/.run/$1.pid" before after
    before="$(cat "$pidfile" 2>/dev/null || true)"
    endpoint="$(EMULATOR="$1" ./localstack/start.sh | tail -n 1)"
    after="$(cat "$pidfile" 2>/dev/null || true)"
    if [ -n "$after" ] && [ "$after" != "$before" ]; then
        started="$started $1"
    fi
}

start moto
AWS_ENDPOINT_URL="$endpoint"
start cognito-local
COGNITO_LOCAL_ENDPOINT="$endpoint"
export AWS_ENDPOINT_URL COGNITO_LOCAL_ENDPOINT
echo "Cognito emulators: moto $AWS_ENDPOINT_URL, cognito-local $COGNITO_LOCAL_ENDPOINT" >&2

cargo test --all-features --all-targets "$@"
cargo test --all-features --doc "$@"
