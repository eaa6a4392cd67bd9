#!/usr/bin/env bash
# Memory per idle socket, lean transport against the actix-ws reference, in one run.
#
#   examples/socket_memory.sh [N ...]        (default: 1000 10000 19000)
#
# For every transport and N: a fresh server (release build, fresh database s2o_lean_<n>_<transport>,
# the demo seeded, rate limits off) and `examples/socket_memory.rs` opening N idle table sockets, pushing
# one event to each and reading the server's RSS. Prints one JSON line per measurement. Needs Postgres on
# 127.0.0.1:5432 (user postgres) and a hard file limit of at least N + 100.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/scan2order/target}"
cargo build --release --quiet --bin scan2order --example socket_memory
BIN="$CARGO_TARGET_DIR/release/scan2order"
CLIENT="$CARGO_TARGET_DIR/release/examples/socket_memory"
ulimit -n "$(ulimit -Hn)"
COUNTS=("${@:-1000 10000 19000}")
# shellcheck disable=SC2206
COUNTS=(${COUNTS[*]})
PORT=18480
for n in "${COUNTS[@]}"; do
  for transport in actix-ws lean; do
    db="s2o_lean_${n}_${transport//-/_}"
    psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db" postgres
    log="$(mktemp)"
    SCAN2ORDER__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$db" \
      SCAN2ORDER__HTTP__PORT=$PORT \
      SCAN2ORDER__SOCKETS__TRANSPORT=$transport \
      SCAN2ORDER__RATE_LIMITS__ENABLED=false \
      SCAN2ORDER__DEMO__SEED_ON_START=true \
      SCAN2ORDER__LOG__LEVEL=warn \
      "$BIN" --config config/default.toml serve >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do
      curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
      sleep 0.1
    done
    logins=()
    while read -r _ _role slug user password; do
      logins+=(--login "$user:$password")
    done < <(grep '^LOGIN chef ' "$log" | sort -k3,3)
    "$CLIENT" --url "http://127.0.0.1:$PORT" --pid "$pid" --count "$n" --tables "$log" \
      "${logins[@]}" --label "$transport" || true
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -f "$log"
    PORT=$((PORT + 1))
  done
done
