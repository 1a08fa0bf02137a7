#!/usr/bin/env bash
# Stops the emulators that start.sh started (moto, cognito-local); a LocalStack or an emulator
# it found running is left alone.
#
#   EMULATOR   stop only this one (moto or cognito-local); default: every one it started
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for emulator in ${EMULATOR:-moto cognito-local}; do
    pidfile="$here/.run/$emulator.pid"
    if [ -f "$pidfile" ]; then
        pid="$(cat "$pidfile")"
        if kill "$pid" 2>/dev/null; then
            echo "stopped $emulator (pid $pid)" >&2
        fi
        rm -f "$pidfile"
    fi
done
