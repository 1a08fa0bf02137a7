#!/usr/bin/env bash
# The example server under load: `GET /me` with one cached token against `GET /health` with the
# same header, wrk with 64 connections, the server's CPU time from /proc, median of three runs.
# Needs wrk (apt-get install wrk). Starts moto and seeds a pool as the demo does.
#
#   SECS   seconds per run (default 10)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

secs="${SECS:-10}"
port=18181
# shellcheck source=scripts/moto-session.sh
. scripts/moto-session.sh

cargo build --quiet --features test-util --example seed
cargo build --quiet --release --all-features --example server
mkdir -p "$run"
umask 077
"${CARGO_TARGET_DIR:-target}/debug/examples/seed" >"$run/bench.env"
set -a
# shellcheck disable=SC1091
. "$run/bench.env"
set +a

RUST_LOG=warn PORT="$port" COGNITO_CACHE_TTL_SECS=3600 "${CARGO_TARGET_DIR:-target}/release/examples/server" &
server=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.1
done
header="Authorization: Bearer $ALICE_TOKEN"
curl -sf -H "$header" "http://127.0.0.1:$port/me" >/dev/null

# shellcheck source=scripts/wrk-cpu.sh
. scripts/wrk-cpu.sh

echo "| run | /health CPU/request | /me CPU/request | /health req/s | /me req/s |"
echo "| --- | ---: | ---: | ---: | ---: |"
health=() me=()
for i in 1 2 3; do
    read -r hc hr < <(measure /health)
    read -r mc mr < <(measure /me)
    health+=("$hc") me+=("$mc")
    echo "| $i | $hc µs | $mc µs | $hr | $mr |"
done
h="$(printf '%s\n' "${health[@]}" | median)"
m="$(printf '%s\n' "${me[@]}" | median)"
echo
echo "median server CPU per request: /health $h µs, /me $m µs: /me costs $(awk -v a="$m" -v b="$h" 'BEGIN { printf "%.2f", a - b }') µs more"
