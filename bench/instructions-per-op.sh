#!/usr/bin/env bash
# Instructions a ringkv node executes per operation (user space, every thread), counted by
# valgrind's callgrind while redis-benchmark drives it, and the functions that execute most of
# them. Unlike ops/s or CPU time on a shared machine, the count repeats from run to run: to a
# few in ten thousand, except that a memtable flush falls inside the counted window in some
# runs and not in others, which moves the total by about 1.5 % (two clusters of counts; run
# it three times and compare like with like). It does not see cache misses, the kernel or
# waiting, which `cpu-per-op.sh` and `perf` do.
#
# The node runs under valgrind with instrumentation off while WARM operations fill its caches
# and memtable (a steady state, as in a long redis-benchmark run), then on for N operations.
#
# Usage: bench/instructions-per-op.sh [BINARY]   (environment: N, WARM, CLIENTS, SIZE, KEYS,
#        PIPELINE, TEST, ENGINE, SYNC, TOP; KEEP=FILE keeps callgrind's output for
#        callgrind_annotate; BINARY defaults to this tree's release build)
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-100000}"; WARM="${WARM:-300000}"; CLIENTS="${CLIENTS:-50}"; SIZE="${SIZE:-100}"
KEYS="${KEYS:-100000}"; PIPELINE="${PIPELINE:-16}"; TEST="${TEST:-set}"; ENGINE="${ENGINE:-lsm}"
SYNC="${SYNC:-always}"; TOP="${TOP:-25}"; PORT="${PORT:-26579}"

source bench/common.sh
need_redis
if ! command -v valgrind >/dev/null; then
  echo "installing valgrind..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
if [ $# -gt 0 ]; then ringkv="$1"; else build_ringkv; fi

work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out" \
  "$ringkv" server --data-dir "$work/data" --sync "$SYNC" --engine "$ENGINE" \
  --resp "127.0.0.1:$PORT" --http 127.0.0.1:0 --listen 127.0.0.1:0 >"$work/node.log" 2>&1 &
pid=$!
# Under valgrind a node takes seconds to start.
for _ in $(seq 600); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$PORT" ping >/dev/null || { echo "the node did not start" >&2; exit 1; }

load() { # operations
  redis-benchmark -p "$PORT" -t "$TEST" -n "$1" -c "$CLIENTS" -d "$SIZE" -r "$KEYS" \
    -P "$PIPELINE" -q >/dev/null 2>&1
}
load "$WARM"
callgrind_control --instr=on "$pid" >/dev/null 2>&1
load "$N"
callgrind_control --instr=off "$pid" >/dev/null 2>&1
callgrind_control --dump "$pid" >/dev/null 2>&1
for _ in $(seq 100); do [ -s "$work/callgrind.out.1" ] && break; sleep 0.1; done

if [ -n "${KEEP:-}" ]; then cp "$work/callgrind.out.1" "$KEEP"; fi
total=$(awk '/^totals:/ { print $2 }' "$work/callgrind.out.1")
echo "redis-benchmark -t $TEST -n $N (after $WARM) -c $CLIENTS -d $SIZE -r $KEYS -P $PIPELINE;" \
  "ringkv --engine $ENGINE --sync $SYNC"
awk -v t="$total" -v n="$N" 'BEGIN { printf "%.0f instructions per operation\n", t / n }'
echo "-- the $TOP functions that execute the most, with what they call (instructions per operation)"
callgrind_annotate --inclusive=yes "$work/callgrind.out.1" 2>/dev/null |
  awk -v n="$N" -v top="$TOP" '/^ *[0-9,]+ +\( *[0-9.]+%\)/ { count = $1; gsub(/,/, "", count)
    sub(/^ *[0-9,]+ +\( *[0-9.]+%\) +/, ""); sub(/ \[.*\]$/, ""); sub(/^[^ ]*\.(rs|c|h|S):/, "")
    if ($0 != "PROGRAM TOTALS" && seen[$0]++ == 0 && ++shown <= top)
      printf "%8.0f  %s\n", count / n, substr($0, 1, 150) }'
