#!/usr/bin/env bash
# Run a command with Azurite (Blob, Queue, Table) listening on 127.0.0.1:10000-10002, and stop
# Azurite afterwards whatever the command's outcome. The command's exit code is kept.
#   scripts/with-azurite.sh .venv/bin/pytest
set -uo pipefail

azurite=node_modules/.bin/azurite
[ -x "$azurite" ] || { echo "with-azurite: $azurite is missing: run 'npm install' (make test does)" >&2; exit 1; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 10000 10001 10002; do
  if port_busy "$port"; then
    echo "with-azurite: port $port is already in use (a stale Azurite? 'pkill -f azurite' stops it)" >&2
    exit 1
  fi
done

workdir=$(mktemp -d)
"$azurite" --silent --inMemoryPersistence --disableTelemetry --skipApiVersionCheck --loose \
  --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 \
  >"$workdir/azurite.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$workdir"; }
trap cleanup EXIT

# A loaded two-core machine can take many seconds to start Node: wait up to AZURITE_START_SECONDS
# (default 60) for all three ports, and stop early if Azurite exits.
wait_seconds=${AZURITE_START_SECONDS:-60}
case "$wait_seconds" in ''|*[!0-9]*) echo "with-azurite: AZURITE_START_SECONDS must be a whole number of seconds, not '$wait_seconds'" >&2; exit 2 ;; esac
deadline=$((SECONDS + wait_seconds))
until port_busy 10000 && port_busy 10001 && port_busy 10002; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "with-azurite: Azurite exited at start:" >&2; cat "$workdir/azurite.log" >&2; exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "with-azurite: Azurite did not open ports 10000-10002 within ${wait_seconds} s (set AZURITE_START_SECONDS to wait longer):" >&2
    cat "$workdir/azurite.log" >&2; exit 1
  fi
  sleep 0.2
done

export AEGIS_TEST_STORAGE="UseDevelopmentStorage=true"
"$@"
