#!/usr/bin/env bash
# Runs the whole test suite: unit tests, emulator tests, examples and doc tests.
#
# Starts the Cognito emulator (localstack/start.sh) when none answers, and stops it afterwards
# if it started it. Emulator tests never skip: without an emulator they fail and say so.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The fleet-mode tests start redis-servers of their own.
if ! command -v redis-server >/dev/null 2>&1; then
    echo "installing redis-server (Debian package) for the fleet-mode tests" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >&2
fi

pidfile=localstack/.run/moto.pid
before="$(cat "$pidfile" 2>/dev/null || true)"
endpoint="$(./localstack/start.sh | tail -n 1)"
after="$(cat "$pidfile" 2>/dev/null || true)"
if [ -n "$after" ] && [ "$after" != "$before" ]; then
    trap './localstack/stop.sh' EXIT
fi
export AWS_ENDPOINT_URL="$endpoint"
echo "Cognito emulator: $AWS_ENDPOINT_URL" >&2

cargo test --all-features --all-targets "$@"
cargo test --all-features --doc "$@"
