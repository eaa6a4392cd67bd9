#!/usr/bin/env bash
# Socket churn: waves of sockets connect, get an event each and leave, against one running server; the
# server's RSS after the last wave must stay where it was after the first (memory freed by sockets that
# left is reused, not kept). With glibc's malloc the server kept ~2 KB per socket of every wave.
#
#   load-tests/churn.sh URL SEED_FILE SERVER_PID [SOCKETS] [WAVES]
#
# Fails (exit 1) when RSS grew by more than max(4 MiB, 500 B per socket) from the first wave to the last.
set -euo pipefail

url=${1:?usage: churn.sh URL SEED_FILE SERVER_PID [SOCKETS] [WAVES]}
seed=${2:?seed file}
pid=${3:?server pid}
sockets=${4:-3000}
waves=${5:-4}

source "$(dirname "$0")/load-bin.sh"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }

first=
for wave in $(seq 1 "$waves"); do
  if ! "$LOAD_BIN" sockets --url "$url" --seed "$seed" --sockets "$sockets" --restaurants 2 \
      --hold 1 --max-errors 0 --server-pid "$pid" >"$out/wave$wave.log" 2>&1; then
    cat "$out/wave$wave.log" >&2
    echo "churn: wave $wave FAILED" >&2
    exit 1
  fi
  # The server has seen every socket of the wave close once its socket count is back to zero.
  for _ in $(seq 1 100); do
    n=$(curl -fsS "$url/metrics" | awk '/^s2o_sockets\{/ {s+=$2} END {print s+0}')
    [[ "$n" == 0 ]] && break
    sleep 0.1
  done
  now=$(rss)
  first=${first:-$now}
  echo "churn: wave $wave of $sockets sockets: server RSS $now KiB"
done
allowed=$(( sockets * 500 / 1024 ))
(( allowed < 4096 )) && allowed=4096
grown=$(( now - first ))
if (( grown > allowed )); then
  echo "churn: FAILED: RSS grew $grown KiB from the first wave to the last (allowed $allowed KiB)" >&2
  exit 1
fi
echo "churn: OK: RSS grew $grown KiB from the first wave to the last (allowed $allowed KiB)"
