#!/usr/bin/env bash
# The demo: starts the Cognito emulator, seeds a pool with two users, starts the example server
# against it and shows curl lines that work. The server keeps running until Ctrl-C; with
# DEMO_EXIT=1 the script stops everything after the curl lines.
#
#   PORT   the example server's port (default 8080)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

port="${PORT:-8080}"
# shellcheck source=scripts/moto-session.sh
. scripts/moto-session.sh

echo "building the examples..." >&2
cargo build --quiet --all-features --example seed --example server

bin="${CARGO_TARGET_DIR:-target}/debug/examples"
mkdir -p "$run"
umask 077
"$bin/seed" >"$run/demo.env"
set -a
# shellcheck disable=SC1091
. "$run/demo.env"
set +a
printf '%s' "$ALICE_TOKEN" >"$run/alice.token"
printf '%s' "$ADMIN_TOKEN" >"$run/admin.token"

PORT="$port" COGNITO_CACHE_TTL_SECS=10 "$bin/server" &
server=$!

for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    kill -0 "$server" 2>/dev/null || { echo "the example server exited" >&2; exit 1; }
    sleep 0.1
done

show() {
    echo
    echo "\$ $1"
    eval "$1"
    echo
}
echo
echo "pool $COGNITO_USER_POOL_ID, app client $COGNITO_CLIENT_ID, emulator $AWS_ENDPOINT_URL"
show "curl -s -H \"Authorization: Bearer \$(cat $run/alice.token)\" http://127.0.0.1:$port/me"
show "curl -s -i http://127.0.0.1:$port/me"
show "curl -s -i -H \"Authorization: Bearer \$(cat $run/alice.token)\" http://127.0.0.1:$port/admin"
show "curl -s -H \"Authorization: Bearer \$(cat $run/admin.token)\" http://127.0.0.1:$port/admin"
echo "The point: a signed-out token is refused at once (without /logout's invalidation, within the"
echo "cache TTL, 10 s here), though its signature and exp are still good."
show "curl -s -i -X POST -H \"Authorization: Bearer \$(cat $run/alice.token)\" http://127.0.0.1:$port/logout"
show "curl -s -i -H \"Authorization: Bearer \$(cat $run/alice.token)\" http://127.0.0.1:$port/me"

if [ -n "${DEMO_EXIT:-}" ]; then
    exit 0
fi
echo "The server runs on http://127.0.0.1:$port until Ctrl-C; the lines above work in another shell."
wait "$server"
