#!/usr/bin/env bash
# Makes a Cognito emulator answer on loopback for the tests and the demo.
#
# If something already answers Cognito on the port (LocalStack Pro, or an emulator started
# earlier), it is used as it is. Otherwise the emulator, pinned below, is installed under
# localstack/ and started in the background; its pid and log go to localstack/.run/.
#
#   EMULATOR        moto (default) or cognito-local
#   EMULATOR_PORT   port to use (default 4566 for moto, LocalStack's; 9229 for cognito-local)
#   MOTO_VERSION    moto release to install (default pinned below)
#   COGNITO_LOCAL_VERSION   cognito-local release to install (default pinned below)
#
# Prints the endpoint to export as AWS_ENDPOINT_URL on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
emulator="${EMULATOR:-moto}"
moto_version="${MOTO_VERSION:-5.2.5}"
cognito_local_version="${COGNITO_LOCAL_VERSION:-5.3.0}"
run="$here/.run"

case "$emulator" in
    moto) port="${EMULATOR_PORT:-4566}" ;;
    cognito-local) port="${EMULATOR_PORT:-9229}" ;;
    *) echo "EMULATOR=$emulator: expected moto or cognito-local" >&2; exit 2 ;;
esac
endpoint="http://127.0.0.1:${port}"
pidfile="$run/$emulator.pid"
log="$run/$emulator.log"

# Answers when a Cognito API is served on the port: an unsigned ListUserPools gets a Cognito
# JSON answer (moto and cognito-local accept it, LocalStack refuses it), not a connection error.
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

mkdir -p "$run"
case "$emulator" in
    moto)
        venv="$here/.venv"
        if [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$moto_version')" 2>/dev/null; then
            echo "installing moto[server]==$moto_version into $venv" >&2
            python3 -m venv "$venv"
            "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$moto_version" >&2
        fi
        echo "starting moto $moto_version on 127.0.0.1:$port (log: $log)" >&2
        nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 </dev/null &
        ;;
    cognito-local)
        prefix="$here/.cognito-local"
        installed="$(node -p "require('$prefix/node_modules/cognito-local/package.json').version" 2>/dev/null || true)"
        if [ "$installed" != "$cognito_local_version" ]; then
            echo "installing cognito-local@$cognito_local_version into $prefix" >&2
            mkdir -p "$prefix"
            npm install --prefix "$prefix" --no-audit --no-fund --silent "cognito-local@$cognito_local_version" >&2
        fi
        # cognito-local keeps its data and config in ./.cognito. Its defaults are kept (pool ids
        # `local_...`, email usernames, issuer `http://localhost:{port}`), except that it listens
        # on 127.0.0.1: "localhost" may resolve to ::1 only.
        data="$run/cognito-local"
        rm -rf "$data"
        mkdir -p "$data/.cognito"
        printf '{"ServerConfig":{"hostname":"127.0.0.1"},"TokenConfig":{"IssuerDomain":"http://localhost:%s"}}\n' "$port" \
            >"$data/.cognito/config.json"
        echo "starting cognito-local $cognito_local_version on 127.0.0.1:$port (log: $log)" >&2
        (
            cd "$data"
            PORT="$port" nohup node "$prefix/node_modules/cognito-local/lib/bin/start.js" >"$log" 2>&1 </dev/null &
            echo $! >"$pidfile.tmp"
        )
        ;;
esac
if [ -f "$pidfile.tmp" ]; then
    mv "$pidfile.tmp" "$pidfile"
else
    echo $! >"$pidfile"
fi

for _ in $(seq 1 150); do
    if answers; then
        echo "$endpoint"
        exit 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "$emulator exited; its log follows" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.2
done
echo "$emulator did not answer on $endpoint within 30 s; see $log" >&2
exit 1
