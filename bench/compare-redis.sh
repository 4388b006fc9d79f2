#!/usr/bin/env bash
# Puts ringkv beside Redis in one run: the same redis-benchmark workloads, back to back,
# against redis-server (appendfsync always, and everysec) and ringkv (--sync always, and
# periodic, the like-for-like with everysec). Prints one table: ops/s, p99 and ringkv / Redis.
#
# Usage: bench/compare-redis.sh            (environment: N, CLIENTS, SIZE, KEYS, PIPELINES)
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-200000}"; CLIENTS="${CLIENTS:-50}"; SIZE="${SIZE:-100}"; KEYS="${KEYS:-100000}"
PIPELINES="${PIPELINES:-1 16}"
BASE_PORT="${BASE_PORT:-26379}"

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  echo "installing redis-server and redis-tools..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
cargo build --release --quiet
ringkv=target/release/ringkv

work="$(mktemp -d)"
pids=()
cleanup() {
  for port in $((BASE_PORT)) $((BASE_PORT + 1)); do redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start_redis() { # port fsync
  mkdir -p "$work/redis-$1"
  redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync "$2" \
    --dir "$work/redis-$1" --daemonize yes --logfile "$work/redis-$1.log" >/dev/null
}
start_ringkv() { # port sync
  "$ringkv" server --data-dir "$work/ringkv-$1" --sync "$2" --resp "127.0.0.1:$1" \
    --http 127.0.0.1:0 --listen 127.0.0.1:0 >"$work/ringkv-$1.log" 2>&1 &
  pids+=($!)
}
wait_ready() {
  for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "server on port $1 did not start" >&2; exit 1
}

start_redis $((BASE_PORT)) always
start_redis $((BASE_PORT + 1)) everysec
start_ringkv $((BASE_PORT + 2)) always
start_ringkv $((BASE_PORT + 3)) periodic
for port in $((BASE_PORT)) $((BASE_PORT + 1)) $((BASE_PORT + 2)) $((BASE_PORT + 3)); do wait_ready "$port"; done

# Prints "ops/s p99_ms" for each of SET and GET.
measure() { # port pipeline
  redis-benchmark -p "$1" -t set,get -n "$N" -c "$CLIENTS" -d "$SIZE" -r "$KEYS" -P "$2" --csv 2>/dev/null |
    awk -F'","' 'NR > 1 { gsub(/"/, "", $1); gsub(/"/, "", $2); gsub(/"/, "", $7); print $1, $2, $7 }'
}

printf '%-4s %-3s | %-24s | %-24s | %-13s\n' test P "ringkv ops/s (p99 ms)" "redis ops/s (p99 ms)" "ratio ops/s"
for pairing in "always:$((BASE_PORT + 2)):$((BASE_PORT))" "periodic/everysec:$((BASE_PORT + 3)):$((BASE_PORT + 1))"; do
  IFS=: read -r label ringkv_port redis_port <<<"$pairing"
  echo "-- ringkv --sync ${label%%/*} vs redis appendfsync ${label##*/}"
  for pipeline in $PIPELINES; do
    ours="$(measure "$ringkv_port" "$pipeline")"
    theirs="$(measure "$redis_port" "$pipeline")"
    for test in SET GET; do
      read -r _ our_rps our_p99 <<<"$(grep "^$test " <<<"$ours")"
      read -r _ their_rps their_p99 <<<"$(grep "^$test " <<<"$theirs")"
      ratio="$(awk -v a="$our_rps" -v b="$their_rps" 'BEGIN { printf "%.2f", a / b }')"
      printf '%-4s %-3s | %10.0f (%8s)    | %10.0f (%8s)    | %s\n' \
        "$test" "$pipeline" "$our_rps" "$our_p99" "$their_rps" "$their_p99" "$ratio"
    done
  done
done
