# Sourced by the demo and the server benchmark, from the project root: starts moto unless a
# Cognito endpoint already answers, exports AWS_ENDPOINT_URL, and on exit stops the example
# server whose pid the caller puts in $server, and the moto it started (not one already running).
run=localstack/.run
before="$(cat "$run/moto.pid" 2>/dev/null || true)"
endpoint="$(./localstack/start.sh | tail -n 1)"
after="$(cat "$run/moto.pid" 2>/dev/null || true)"
export AWS_ENDPOINT_URL="$endpoint"
server=""
cleanup() {
    [ -z "$server" ] || kill "$server" 2>/dev/null || true
    if [ -n "$after" ] && [ "$after" != "$before" ]; then
        EMULATOR=moto ./localstack/stop.sh 2>/dev/null || true
    fi
}
trap cleanup EXIT
