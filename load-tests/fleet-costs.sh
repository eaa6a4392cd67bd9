#!/usr/bin/env bash
# The fleet's costs on this machine: a fleet of two (release build, config/loadtest.toml, a private
# nats-server) on a fresh database; node 1 runs both demo restaurants. First SOCKETS idle sockets on
# node 2 (every one relayed) with that node's RSS per socket; then, alternating, the `orders` scenario
# through node 1 (the owner) and through node 2 (every order forwarded, every event relayed), twice.
#   load-tests/fleet-costs.sh            RATE=3000 DUR=12 SOCKETS=10000 by default
# Reports: /tmp/fleet-costs-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-$HOME/.cache/scan2order/target}/release
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
db=s2o_fwd_bench_$$; work=$(mktemp -d)
export SCAN2ORDER__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$db"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
$T/scan2order --config config/loadtest.toml seed-demo >"$work/seed.txt"
$T/scan2order-load mint-tokens --count 2000 --out "$work/tokens.txt" >/dev/null
np=$(free_port); nats-server -a 127.0.0.1 -p $np >/dev/null 2>&1 & pids+=($!)
ports=()
for i in 1 2; do
  p=$(free_port); ports+=($p)
  SCAN2ORDER__CLUSTER__ENABLED=true SCAN2ORDER__CLUSTER__NATS_URL=nats://127.0.0.1:$np SCAN2ORDER__CLUSTER__NODE_ID=bench-$i \
  SCAN2ORDER__HTTP__PORT=$p SCAN2ORDER__HTTP__PUBLIC_BASE_URL=http://127.0.0.1:$p SCAN2ORDER__LOG__LEVEL=warn \
    $T/scan2order --config config/loadtest.toml serve >"$work/node-$i.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do curl -fsS http://127.0.0.1:$p/readyz >/dev/null 2>&1 && break; sleep 0.2; done
done
for token in $(awk '$1 == "TABLE" && !seen[$2]++ { sub(".*/t/", "", $4); print $4 }' "$work/seed.txt"); do
  curl -fsS "http://127.0.0.1:${ports[0]}/api/v1/tables/$token" >/dev/null
done
echo "== ${SOCKETS:-10000} idle sockets on node 2 (every one relayed)"
$T/scan2order-load sockets --url http://127.0.0.1:${ports[1]} --seed "$work/seed.txt" --tokens "$work/tokens.txt" \
  --sockets "${SOCKETS:-10000}" --restaurants 2 --hold 5 --server-pid "${pids[2]}" \
  --json /tmp/fleet-costs-sockets.json >/tmp/fleet-costs-sockets.log 2>&1; tail -8 /tmp/fleet-costs-sockets.log
for round in 1 2; do
for i in 0 1; do
  echo "== round $round: orders through node $((i+1)) ($([[ $i -eq 0 ]] && echo owner || echo non-owner))"
  $T/scan2order-load orders --url http://127.0.0.1:${ports[$i]} --seed "$work/seed.txt" --tokens "$work/tokens.txt" \
    --rate "${RATE:-3000}" --duration "${DUR:-15}" --restaurants 2 --tables 10 --settle-ms 1000 --json /tmp/fleet-costs-$round-$i.json >/tmp/fleet-costs-$round-$i.log 2>&1; tail -12 /tmp/fleet-costs-$round-$i.log
done
done
psql -h 127.0.0.1 -U postgres -d $db -Atc "SELECT node_id, count(*) FROM restaurant_leases GROUP BY 1"
