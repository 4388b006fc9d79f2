#!/usr/bin/env bash
# Where a request's CPU goes: the same redis-benchmark run against redis-server (appendfsync
# always, or everysec with SYNC=periodic) and a ringkv node (--sync $SYNC), alternating. For
# each it prints the CPU spent per operation (user and kernel): ringkv's per thread
# (connections, writer, syncer, flusher, compaction), the benchmark's own, and ringkv's writes
# per fsync (group commit).
#
# Throughput on a shared 2-core machine drifts by 10 % or more between runs; CPU per operation
# drifts less and says which side of the machine a change moved. A thread near 1000 us of
# CPU per ms of run (printed as "busy") is the bottleneck: see the `busy` column.
#
# Usage: bench/cpu-per-op.sh   (environment: N, CLIENTS, SIZE, KEYS, PIPELINE, TEST, SYNC, ROUNDS)
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-200000}"; CLIENTS="${CLIENTS:-50}"; SIZE="${SIZE:-100}"; KEYS="${KEYS:-100000}"
PIPELINE="${PIPELINE:-1}"; TEST="${TEST:-set}"; ROUNDS="${ROUNDS:-3}"; SYNC="${SYNC:-always}"
case "$SYNC" in
  always) appendfsync=always ;;
  periodic) appendfsync=everysec ;;
  *) echo "SYNC must be always or periodic (the like-for-like of appendfsync everysec)" >&2; exit 2 ;;
esac
BASE_PORT="${BASE_PORT:-26479}"

source bench/common.sh
need_redis
build_ringkv
ticks="$(getconf CLK_TCK)"

work="$(mktemp -d)"
pids=()
redis_port=$BASE_PORT; ringkv_port=$((BASE_PORT + 1)); metrics_port=$((BASE_PORT + 2))
cleanup() {
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly yes \
  --appendfsync "$appendfsync" --dir "$work/redis" --daemonize yes --pidfile "$work/redis.pid" \
  --logfile "$work/redis.log" >/dev/null
"$ringkv" server --data-dir "$work/ringkv" --sync "$SYNC" --resp "127.0.0.1:$ringkv_port" \
  --http "127.0.0.1:$metrics_port" --listen 127.0.0.1:0 >"$work/ringkv.log" 2>&1 &
pids+=($!); ringkv_pid=$!
for port in "$redis_port" "$ringkv_port"; do wait_ready "$port"; done
redis_pid="$(cat "$work/redis.pid")"

# "name user system" in clock ticks, for a process (one line) or for each of its threads,
# summed by thread name with digits dropped (tokio names all its workers alike).
process_ticks() { awk '{ print "process", $14, $15 }' "/proc/$1/stat"; }
thread_ticks() {
  for task in /proc/"$1"/task/*; do
    # The name is in parentheses and may hold spaces; the counters follow it.
    sed -E 's/^[0-9]+ \((.*)\) /\1\t/' "$task/stat" | awk -F'\t' '{ split($2, f, " "); n = $1;
      gsub(/[0-9]+$/, "", n); gsub(/ /, "_", n); print n, f[12], f[13] }'
  done | awk '{ u[$1] += $2; s[$1] += $3 } END { for (n in u) print n, u[n], s[n] }'
}
syncs() { curl -s "127.0.0.1:$metrics_port/metrics" | awk '/^ringkv_store_syncs_total/ { print $2 }'; }
children_ticks() { awk '{ print $16 + $17 }' "/proc/$$/stat"; }

# Runs the benchmark once against `port`, printing its ops/s and how long it took (ms).
run() { # port
  local started ended ops
  started=$(date +%s%N)
  ops=$(redis-benchmark -p "$1" -t "$TEST" -n "$N" -c "$CLIENTS" -d "$SIZE" -r "$KEYS" \
    -P "$PIPELINE" --csv 2>/dev/null | awk -F'","' 'NR > 1 { gsub(/"/, "", $2); print $2; exit }')
  ended=$(date +%s%N)
  echo "$ops $(( (ended - started) / 1000000 ))"
}

# Prints one row per process or thread: CPU microseconds per operation and share of the run.
report() { # label before after elapsed_ms
  join <(sort "$2") <(sort "$3") | awk -v label="$1" -v n="$N" -v hz="$ticks" -v ms="$4" '{
    user = ($4 - $2) / hz * 1e6 / n; sys = ($5 - $3) / hz * 1e6 / n
    if (user + sys > 0.005)
      printf "  %-8s %-18s %7.2f us/op (user %5.2f, kernel %5.2f)  busy %4.0f us/ms\n",
        label, $1, user + sys, user, sys, (user + sys) * n / ms }'
}

echo "redis-benchmark -t $TEST -n $N -c $CLIENTS -d $SIZE -r $KEYS -P $PIPELINE, $ROUNDS rounds;" \
  "ringkv --sync $SYNC, redis appendfsync $appendfsync"
for round in $(seq "$ROUNDS"); do
  for side in redis ringkv; do
    if [ "$side" = redis ]; then pid=$redis_pid; port=$redis_port; else pid=$ringkv_pid; port=$ringkv_port; fi
    process_ticks "$pid" >"$work/p0"; thread_ticks "$pid" >"$work/t0"; syncs0=$(syncs)
    # Read right around the run, so the helpers' own processes are not counted as the
    # benchmark's.
    bench0=$(children_ticks)
    read -r ops elapsed <<<"$(run "$port")"
    bench1=$(children_ticks)
    process_ticks "$pid" >"$work/p1"; thread_ticks "$pid" >"$work/t1"; syncs1=$(syncs)
    extra=""
    if [ "$side" = ringkv ]; then
      extra=", $(awk -v n="$N" -v s="$((syncs1 - syncs0))" \
        'BEGIN { if (s) printf "%.1f writes per fsync", n / s; else printf "no fsync" }')"
    fi
    printf '%s %-6s %9.0f ops/s; benchmark %.2f us/op%s\n' "$round" "$side" "$ops" \
      "$(awk -v t="$((bench1 - bench0))" -v hz="$ticks" -v n="$N" 'BEGIN { print t / hz * 1e6 / n }')" "$extra"
    report "$side" "$work/p0" "$work/p1" "$elapsed"
    if [ "$side" = ringkv ]; then report thread "$work/t0" "$work/t1" "$elapsed"; fi
  done
done
