#!/usr/bin/env bash
# Puts ringkv beside Redis in one run: the same redis-benchmark workloads, back to back,
# against redis-server (appendfsync always, and everysec) and ringkv (--sync always, and
# periodic, the like-for-like with everysec; and the in-memory engine with --sync always, which
# keeps its data as Redis does). Prints one table: ops/s, p99 and ringkv / Redis.
#
# Each figure is the median of ROUNDS runs, ringkv's and Redis's alternating (and which goes
# first alternating by round), so that a shared machine's slow moments fall on both sides; the
# spread (lowest-highest ops/s) is printed too.
#
# The data types (INCR, SADD, HSET, ZADD) are measured in the first pairing (the default engine
# against appendfsync always), with -r MEMBERS: redis-benchmark's SADD, HSET and ZADD write
# members into one key, so MEMBERS bounds how large that collection grows. ringkv rewrites a
# collection whole on each write (see README, "Data types"), so it falls behind Redis as
# collections grow; MEMBERS=100000 shows by how much.
#
# Usage: bench/compare-redis.sh
#   (environment: N, CLIENTS, SIZE, KEYS, PIPELINES, ROUNDS, MEMBERS, TYPES=0 to skip types)
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-200000}"; CLIENTS="${CLIENTS:-50}"; SIZE="${SIZE:-100}"; KEYS="${KEYS:-100000}"
PIPELINES="${PIPELINES:-1 16}"
ROUNDS="${ROUNDS:-3}"
MEMBERS="${MEMBERS:-100}"; TYPES="${TYPES:-1}"
BASE_PORT="${BASE_PORT:-26379}"

source bench/common.sh
need_redis
build_ringkv

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
start_ringkv() { # port sync engine
  "$ringkv" server --data-dir "$work/ringkv-$1" --sync "$2" --engine "$3" --resp "127.0.0.1:$1" \
    --http 127.0.0.1:0 --listen 127.0.0.1:0 >"$work/ringkv-$1.log" 2>&1 &
  pids+=($!)
}

start_redis $((BASE_PORT)) always
start_redis $((BASE_PORT + 1)) everysec
start_ringkv $((BASE_PORT + 2)) always lsm
start_ringkv $((BASE_PORT + 3)) periodic lsm
start_ringkv $((BASE_PORT + 4)) always memory
for port in $(seq "$BASE_PORT" $((BASE_PORT + 4))); do wait_ready "$port"; done

# Prints "TEST ops/s p99_ms" for each of SET and GET. Each run starts with nothing left to
# write back from the one before (a memtable flush, an AOF's tail), whose writes would slow
# this run's fsyncs: an order effect worth 5-10 % between back-to-back runs at -P 1.
measure() { # port pipeline [tests keys]
  sync
  redis-benchmark -p "$1" -t "${3:-set,get}" -n "$N" -c "$CLIENTS" -d "$SIZE" -r "${4:-$KEYS}" \
    -P "$2" --csv 2>/dev/null |
    awk -F'","' 'NR > 1 { gsub(/"/, "", $1); gsub(/"/, "", $2); gsub(/"/, "", $7); print $1, $2, $7 }'
}

# Median of the numbers on standard input.
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
spread() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f-%.0f", lo, hi }'; }

printf '%-4s %-3s | %-30s | %-30s | %s\n' test P "ringkv ops/s (p99 ms) [spread]" \
  "redis ops/s (p99 ms) [spread]" "ratio ops/s"
# The default engine (lsm) against Redis's two fsync policies, then the in-memory engine
# (log + snapshots, as Redis keeps its data) against Redis's strictest.
for pairing in "lsm:always:$((BASE_PORT + 2)):$((BASE_PORT))" \
  "lsm:periodic/everysec:$((BASE_PORT + 3)):$((BASE_PORT + 1))" \
  "memory:always:$((BASE_PORT + 4)):$((BASE_PORT))"; do
  IFS=: read -r engine label ringkv_port redis_port <<<"$pairing"
  echo "-- ringkv --engine $engine --sync ${label%%/*} vs redis appendfsync ${label##*/} (median of $ROUNDS)"
  tests="set,get"
  if [[ "$TYPES" == 1 && "$ringkv_port" == $((BASE_PORT + 2)) ]]; then
    tests="set,get,incr,sadd,hset,zadd"
  fi
  for pipeline in $PIPELINES; do
    ours=""; theirs=""
    for round in $(seq "$ROUNDS"); do
      # Who goes first alternates too: a shared machine's speed drifts from one run to the next
      # (the same binary measured up to 10 % faster in each of three back-to-back pairs), and a
      # fixed order would hand that drift to one side.
      run() { # port
        measure "$1" "$pipeline"
        if [[ "$tests" != set,get ]]; then measure "$1" "$pipeline" incr,sadd,hset,zadd "$MEMBERS"; fi
      }
      if ((round % 2)); then
        ours+="$(run "$ringkv_port")"$'\n'
        theirs+="$(run "$redis_port")"$'\n'
      else
        theirs+="$(run "$redis_port")"$'\n'
        ours+="$(run "$ringkv_port")"$'\n'
      fi
    done
    for test in $(tr a-z, A-Z' ' <<<"$tests"); do
      column() { grep "^$test " <<<"$1" | awk -v c="$2" '{ print $c }'; }
      our_rps="$(column "$ours" 2 | median)"; our_p99="$(column "$ours" 3 | median)"
      their_rps="$(column "$theirs" 2 | median)"; their_p99="$(column "$theirs" 3 | median)"
      ratio="$(awk -v a="$our_rps" -v b="$their_rps" 'BEGIN { printf "%.2f", a / b }')"
      printf '%-4s %-3s | %8.0f (%7.3f) [%s] | %8.0f (%7.3f) [%s] | %s\n' "$test" "$pipeline" \
        "$our_rps" "$our_p99" "$(column "$ours" 2 | spread)" \
        "$their_rps" "$their_p99" "$(column "$theirs" 2 | spread)" "$ratio"
    done
  done
done
