#!/usr/bin/env bash
# Smoke of every load scenario at tiny scale (seconds each) against a running server.
#
#   load-tests/smoke.sh URL SEED_FILE TOKENS_FILE [SERVER_PID]
#
# URL is the server (loopback only), SEED_FILE the output of `scan2order seed-demo`, TOKENS_FILE the
# output of `scan2order-load mint-tokens`. The load binary is taken from $LOAD_BIN, else from
# $CARGO_TARGET_DIR (or ./target)/{release,debug}/scan2order-load. Fails on the first scenario that
# errors or whose completeness check fails; also proves that an injected fault makes a run fail.
set -euo pipefail

url=${1:?usage: smoke.sh URL SEED_FILE TOKENS_FILE [SERVER_PID]}
seed=${2:?seed file}
tokens=${3:?tokens file}
pid=${4:-}

source "$(dirname "$0")/load-bin.sh"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common=(--url "$url" --seed "$seed" --tokens "$tokens" --settle-ms 1000 --max-errors 0)
[[ -n "$pid" ]] && common+=(--server-pid "$pid")

run() {
  local name=$1; shift
  echo "== smoke: $name"
  if ! "$LOAD_BIN" "$@" --json "$out/$name.json" >"$out/$name.log" 2>&1; then
    cat "$out/$name.log" >&2
    echo "smoke: $name FAILED" >&2
    exit 1
  fi
  grep -E '^completeness' "$out/$name.log"
}

run sockets sockets "${common[@]}" --sockets 60 --restaurants 2 --hold 1
run orders orders "${common[@]}" --rate 20 --duration 3 --restaurants 2 --tables 4
run orders-ws-status orders "${common[@]}" --rate 10 --duration 2 --restaurants 1 --tables 2 \
  --status-via socket --fast-subscribe
run fanout fanout "${common[@]}" --sockets 100 --events 3 --event-interval-ms 50
run mixed mixed "${common[@]}" --rate 15 --duration 4 --restaurants 2 --tables 4 \
  --churn-per-s 4 --toggles-per-s 1 --status-delay-ms 100
run sockets-2proc sockets "${common[@]}" --sockets 40 --restaurants 2 --hold 1 --processes 2

# The baseline server and its fan-out measurement.
port=$((20000 + RANDOM % 20000))
"$LOAD_BIN" baseline-server serve --listen "127.0.0.1:$port" 2>"$out/baseline.log" &
bpid=$!
trap 'kill "$bpid" 2>/dev/null || true; rm -rf "$out"' EXIT
sleep 0.5
run baseline-fanout baseline-server fanout --addr "127.0.0.1:$port" --sockets 100 --events 3 \
  --server-pid "$bpid" --max-errors 0

# An injected fault must fail the run (exit 1), or the accounting proves nothing.
for fault in drop dup; do
  echo "== smoke: fanout with --inject-fault $fault must fail"
  set +e
  "$LOAD_BIN" fanout "${common[@]}" --sockets 20 --events 1 --inject-fault "$fault" >"$out/fault.log" 2>&1
  code=$?
  set -e
  if [[ $code -ne 1 ]]; then
    cat "$out/fault.log" >&2
    echo "smoke: --inject-fault $fault exited $code, expected 1" >&2
    exit 1
  fi
  grep -E '^completeness' "$out/fault.log"
done
echo "smoke: all scenarios passed"
