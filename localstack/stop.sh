#!/usr/bin/env bash
# Stops the moto server that start.sh started (a LocalStack it found running is left alone).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pidfile="$here/.run/moto.pid"
if [ -f "$pidfile" ]; then
    pid="$(cat "$pidfile")"
    if kill "$pid" 2>/dev/null; then
        echo "stopped moto (pid $pid)" >&2
    fi
    rm -f "$pidfile"
else
    echo "no moto started by start.sh is running" >&2
fi
