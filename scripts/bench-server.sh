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

ticks="$(getconf CLK_TCK)"
cpu() { awk '{ print $14 + $15 }' "/proc/$server/stat"; }
# One run: server CPU µs per request, requests per second.
measure() {
    local path="$1" start end out
    start="$(cpu)"
    out="$(wrk -t2 -c64 -d"${secs}s" -H "$header" "http://127.0.0.1:$port$path")"
    end="$(cpu)"
    awk -v s="$start" -v e="$end" -v t="$ticks" '
        /requests in/ { n = $1 }
        /Requests\/sec/ { rps = $2 }
        END { printf "%.2f %.0f\n", (e - s) / t * 1e6 / n, rps }' <<<"$out"
}
median() { sort -n | sed -n 2p; }

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
