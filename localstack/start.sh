#!/usr/bin/env bash
# Makes a Cognito endpoint available on loopback for the tests and the demo.
#
# If something already answers Cognito on the port (LocalStack Pro, or a moto started earlier),
# it is used as it is. Otherwise moto's server, pinned below, is installed into localstack/.venv
# and started in the background; its pid and log go to localstack/.run/.
#
#   EMULATOR_PORT   port to use (default 4566, LocalStack's)
#   MOTO_VERSION    moto release to install (default pinned below)
#
# Prints the endpoint to export as AWS_ENDPOINT_URL on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${EMULATOR_PORT:-4566}"
moto_version="${MOTO_VERSION:-5.2.5}"
endpoint="http://127.0.0.1:${port}"
venv="$here/.venv"
run="$here/.run"

# Answers when a Cognito API is served on the port: an unsigned ListUserPools is answered with a
# Cognito JSON body (moto accepts it, LocalStack refuses it), never a connection error.
answers() {
    python3 - "$endpoint" <<'PY' 2>/dev/null
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1] + "/", data=b'{"MaxResults": 1}', headers={
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "AWSCognitoIdentityProviderService.ListUserPools",
})
try:
    urllib.request.urlopen(req, timeout=2)
except urllib.error.HTTPError as e:
    sys.exit(0 if e.code == 400 else 1)
except Exception:
    sys.exit(1)
PY
}

if answers; then
    echo "a Cognito endpoint already answers on port $port" >&2
    echo "$endpoint"
    exit 0
fi

if [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$moto_version')" 2>/dev/null; then
    echo "installing moto[server]==$moto_version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$moto_version" >&2
fi

mkdir -p "$run"
echo "starting moto $moto_version on 127.0.0.1:$port (log: $run/moto.log)" >&2
nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$run/moto.log" 2>&1 &
echo $! >"$run/moto.pid"

for _ in $(seq 1 100); do
    if answers; then
        echo "$endpoint"
        exit 0
    fi
    if ! kill -0 "$(cat "$run/moto.pid")" 2>/dev/null; then
        echo "moto exited; its log follows" >&2
        cat "$run/moto.log" >&2
        exit 1
    fi
    sleep 0.2
done
echo "moto did not answer on $endpoint within 20 s; see $run/moto.log" >&2
exit 1
