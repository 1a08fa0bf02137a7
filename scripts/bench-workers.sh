#!/usr/bin/env bash
# What the middleware costs the way users pay for it: Actix's default workers, the whole
# server process's CPU, the same handler ("ok") on an open route and on one behind CognitoAuth
# with a cached token. wrk with 64 connections; rounds of each route in turn; medians.
# Needs wrk (apt-get install wrk).
#
#   SECS     seconds per run (default 6)
#   ROUNDS   rounds (default 5)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
secs="${SECS:-6}"
rounds="${ROUNDS:-5}"
bin="${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/examples/workers_bench}"
[ -n "${BENCH_BIN:-}" ] || cargo build --quiet --release --features test-util --example workers_bench

out="$(mktemp)"
"$bin" >"$out" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 1 100); do
    [ -s "$out" ] && break
    sleep 0.1
done
read -r port token <"$out"
header="Authorization: Bearer $token"
curl -sf -H "$header" "http://127.0.0.1:$port/protected" >/dev/null

# shellcheck source=scripts/wrk-cpu.sh
. scripts/wrk-cpu.sh

echo "| run | open rps | protected rps | ratio | open CPU/request | protected CPU/request | added CPU per request |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
ratios=() added=()
for i in $(seq 1 "$rounds"); do
    read -r oc orps < <(measure /open)
    read -r pc prps < <(measure /protected)
    ratio="$(awk -v a="$prps" -v b="$orps" 'BEGIN { printf "%.3f", a / b }')"
    add="$(awk -v a="$pc" -v b="$oc" 'BEGIN { printf "%.2f", a - b }')"
    ratios+=("$ratio") added+=("$add")
    echo "| $i | $orps | $prps | $ratio | $oc µs | $pc µs | $add µs |"
done
echo
echo "median: throughput ratio $(printf '%s\n' "${ratios[@]}" | median), added CPU per request $(printf '%s\n' "${added[@]}" | median) µs"
