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

for _ in $(seq 1 100); do
  if port_busy 10000 && port_busy 10001 && port_busy 10002; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "with-azurite: Azurite exited at start:" >&2; cat "$workdir/azurite.log" >&2; exit 1
  fi
  sleep 0.1
done
port_busy 10002 || { echo "with-azurite: Azurite did not open its ports within 10 s" >&2; exit 1; }

export AEGIS_TEST_STORAGE="UseDevelopmentStorage=true"
"$@"
