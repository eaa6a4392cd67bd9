#!/usr/bin/env bash
# A fleet holding a million sockets on this machine: a private nats-server, OWNERS owner nodes (they
# run every restaurant; database pool OWNER_POOL each) and NODES socket nodes (guests and kitchens
# connect only to them; pool 1 each: their commands are forwarded, their events relayed), all on a
# fresh database; then, beside them, one load process per socket node (each from its own 127.0.0.x):
#   1. `sockets`: SOCKETS table and kitchen sockets over RESTAURANTS restaurants (TABLES tables each),
#      every restaurant's sockets spread over SPREAD socket nodes, held HOLD s while one menu event per
#      restaurant every PULSE s reaches every socket of its restaurant (counted at each);
#   2. during the hold, `orders`: RATE orders/s for 20 restaurants through the last socket node, whose
#      kitchen and table sockets are on the one before it (owner, entry and sockets: three nodes).
# Every process stays within this machine's 20,000 files. Reports: $OUT/*.json and *.log, and the
# memory and CPU of the nodes, NATS and the kernel's sockets in $OUT/summary.txt.
#   load-tests/fleet-hold.sh                       the million (about 20 minutes; see BENCHMARKS.md §7)
#   NODES=3 OWNERS=1 SOCKETS=6000 RESTAURANTS=100 HOLD=20 PULSE=10 RATE=50 load-tests/fleet-hold.sh
set -euo pipefail
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-$HOME/.cache/scan2order/target}/release
NODES=${NODES:-56} OWNERS=${OWNERS:-4} OWNER_POOL=${OWNER_POOL:-6}
SOCKETS=${SOCKETS:-1000000} RESTAURANTS=${RESTAURANTS:-10000} TABLES=${TABLES:-20} SPREAD=${SPREAD:-4}
HOLD=${HOLD:-600} PULSE=${PULSE:-60} RATE=${RATE:-200}
# Leases a node may miss a renewal or two of while this box is saturated (the default is 3 s); the
# socket nodes' pool; handshakes in flight per load process.
LEASE_MS=${LEASE_MS:-10000} SOCKET_POOL=${SOCKET_POOL:-1} CONNECTS=${CONNECTS:-32}
OUT=${OUT:-/tmp/fleet-hold}
ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT"; rm -f "$OUT"/*.log "$OUT"/*.json
db=s2o_fleet_hold_$$
export SCAN2ORDER__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$db"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
join() { local IFS=,; echo "$*"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
cpu_s() { awk '{ printf "%.1f", ($14 + $15) / 100 }' "/proc/$1/stat"; }

$T/scan2order --config config/loadtest.toml seed-demo >"$OUT/seed.txt"
$T/scan2order-load mint-tokens --count 5000 --out "$OUT/tokens.txt" >/dev/null
np=$(free_port)
nats-server -a 127.0.0.1 -p "$np" >"$OUT/nats.log" 2>&1 & nats=$!; pids+=($nats)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$np) 2>/dev/null && break; sleep 0.1; done

# start_node NAME POOL THREADS: starts one node; its URL is left in $url.
owner_urls=(); socket_urls=(); node_pids=()
start_node() {
  local name=$1 pool=$2 threads=$3 port; port=$(free_port)
  SCAN2ORDER__CLUSTER__ENABLED=true SCAN2ORDER__CLUSTER__NATS_URL=nats://127.0.0.1:$np \
  SCAN2ORDER__CLUSTER__NODE_ID=$name SCAN2ORDER__DATABASE__POOL_SIZE=$pool \
  SCAN2ORDER__CLUSTER__LEASE_TTL_MS=$LEASE_MS \
  SCAN2ORDER__HTTP__WORKERS=$threads SCAN2ORDER__ENGINE__SHARDS=$threads \
  SCAN2ORDER__ENGINE__RING_SIZE=4096 SCAN2ORDER__ENGINE__RECENT_KEYS=4096 \
  SCAN2ORDER__HTTP__PORT=$port SCAN2ORDER__HTTP__PUBLIC_BASE_URL=http://127.0.0.1:$port \
  SCAN2ORDER__LOG__LEVEL=warn \
    $T/scan2order --config config/loadtest.toml serve >"$OUT/$name.log" 2>&1 &
  pids+=($!); node_pids+=($!)
  url="http://127.0.0.1:$port"
}
wait_ready() {
  for url in "$@"; do
    for _ in $(seq 600); do curl -fsS "$url/readyz" >/dev/null 2>&1 && continue 2; sleep 0.1; done
    echo "$url never became ready" >&2; exit 1
  done
}
for i in $(seq 1 "$OWNERS"); do start_node "owner-$i" "$OWNER_POOL" 2; owner_urls+=("$url"); done
for i in $(seq 1 "$NODES"); do start_node "node-$i" "$SOCKET_POOL" 1; socket_urls+=("$url"); done
wait_ready "${owner_urls[@]}" "${socket_urls[@]}"
echo "fleet: $OWNERS owner nodes, $NODES socket nodes, NATS :$np, database $db"

snapshot() { # what the fleet, NATS and the kernel hold now
  local rss=0 cpu=0 p
  for p in "${node_pids[@]}"; do rss=$((rss + $(rss_kib "$p"))); cpu=$(awk -v a="$cpu" -v b="$(cpu_s "$p")" 'BEGIN { print a + b }'); done
  echo "== $1"
  echo "nodes: rss ${rss} KiB in all, cpu ${cpu} s in all"
  echo "nats: rss $(rss_kib "$nats") KiB, cpu $(cpu_s "$nats") s"
  grep -E '^(TCP|sockets):' /proc/net/sockstat
  grep -E '^(Slab|SUnreclaim|MemAvailable):' /proc/meminfo
  echo "postgres connections: $(psql -h 127.0.0.1 -U postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE datname = '$db'")"
}
snapshot "idle fleet" >"$OUT/summary.txt"

$T/scan2order-load sockets --url "${owner_urls[0]}" --seed "$OUT/seed.txt" \
  --database-url "$SCAN2ORDER__DATABASE__URL" --db-restaurants "$((RESTAURANTS - 2))" --db-tables "$TABLES" \
  --activate-via "$(join "${owner_urls[@]}")" --nodes "$(join "${socket_urls[@]}")" --processes "$NODES" \
  --spread "$SPREAD" --sockets "$SOCKETS" --restaurants "$RESTAURANTS" --hold "$HOLD" --pulse-every "$PULSE" \
  --connect-concurrency "$CONNECTS" --connect-timeout-s 600 --server-pid "$(join "${node_pids[@]}")" \
  --json "$OUT/hold.json" >"$OUT/hold.log" 2>&1 & hold=$!; pids+=($hold)
until grep -q '^holding:' "$OUT/hold.log" 2>/dev/null; do
  kill -0 $hold 2>/dev/null || { tail -20 "$OUT/hold.log"; exit 1; }; sleep 1
done
grep -E '^connected:' "$OUT/hold.log"
snapshot "sockets connected" >>"$OUT/summary.txt"
n=${#socket_urls[@]}
$T/scan2order-load orders --url "${socket_urls[$((n - 1))]}" --socket-nodes "${socket_urls[$(( (n + n - 2) % n ))]}" \
  --seed "$OUT/seed.txt" --tokens "$OUT/tokens.txt" --database-url "$SCAN2ORDER__DATABASE__URL" --db-restaurants 18 \
  --restaurants 20 --tables 2 --rate "$RATE" --duration "$((HOLD * 2 / 3))" --settle-ms 2000 \
  --json "$OUT/orders.json" >"$OUT/orders.log" 2>&1 || echo "orders run failed: see $OUT/orders.log"
snapshot "during the hold, orders done" >>"$OUT/summary.txt"
wait $hold || echo "hold run failed: see $OUT/hold.log"
cat "$OUT/summary.txt"
tail -40 "$OUT/hold.log"; tail -25 "$OUT/orders.log"
