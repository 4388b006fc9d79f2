#!/usr/bin/env bash
# A 3-node loopback cluster beside a single node, in one run: the same `ringkv bench`
# workloads (set, get, YCSB a) at each consistency level against the cluster, and against
# the single node. Prints one table: ops/s, p50 and p99, and cluster / single.
#
# Every node and the load generator share this machine, so a cluster here measures the
# cost of replication (3 copies, the RPC hops), not the capacity of 3 machines.
#
# Usage: bench/cluster.sh        (environment: N, RECORDS, CLIENTS, SIZE, LEVELS, TARGETS)
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-50000}"; RECORDS="${RECORDS:-50000}"; CLIENTS="${CLIENTS:-50}"; SIZE="${SIZE:-100}"
LEVELS="${LEVELS:-one quorum all}"
TARGETS="${TARGETS:-redis http}"
WORKLOADS="${WORKLOADS:-set get a}"

source bench/common.sh
build_ringkv

with_work_dir

# Reads "name http=H resp=R cluster=C" lines from a log until `count` have appeared.
addresses() { # log count
  for _ in $(seq 300); do
    [ "$(grep -c ' http=' "$1" || true)" -ge "$2" ] && return 0
    sleep 0.1
  done
  echo "nodes did not start; log:" >&2; cat "$1" >&2; exit 1
}
field() { grep -o "$2=[^ ]*" <<<"$1" | head -1 | cut -d= -f2; }

"$ringkv" server --data-dir "$work/single" --http 127.0.0.1:0 --resp 127.0.0.1:0 \
  --listen 127.0.0.1:0 >"$work/single.log" 2>&1 &
pids+=($!)
"$ringkv" dev-cluster --nodes 3 --base-port 0 --data-dir "$work/cluster" >"$work/cluster.log" 2>&1 &
pids+=($!)
addresses "$work/single.log" 1
addresses "$work/cluster.log" 3
single="$(grep ' http=' "$work/single.log" | head -1)"
first="$(grep ' http=' "$work/cluster.log" | head -1)"
# Wait until the cluster's first node sees all three members alive and done joining.
for _ in $(seq 300); do
  alive="$("$ringkv" cluster status --json --node "http://$(field "$first" http)" 2>/dev/null |
    grep -o '"status":"normal","liveness":"alive"' | wc -l || true)"
  [ "$alive" -ge 3 ] && break
  sleep 0.1
done

url() { # line protocol
  case "$2" in
    redis) echo "redis://$(field "$1" resp)" ;;
    http) echo "http://$(field "$1" http)" ;;
  esac
}

# Prints "ops/s p50_ms p99_ms" of a run (the first operation type for p50/p99).
measure() { # target workload [consistency]
  local extra=()
  [ -n "${3:-}" ] && extra=(--consistency "$3")
  "$ringkv" bench --target "$1" --workload "$2" --records "$RECORDS" -n "$N" -c "$CLIENTS" \
    -d "$SIZE" --phase run --json "${extra[@]}" 2>/dev/null | summarize_run
}

# Load the records once into each, so reads find them.
for protocol in $TARGETS; do
  "$ringkv" bench --target "$(url "$single" "$protocol")" --records "$RECORDS" --phase load -c "$CLIENTS" -d "$SIZE" >/dev/null 2>&1
  "$ringkv" bench --target "$(url "$first" "$protocol")" --records "$RECORDS" --phase load -c "$CLIENTS" -d "$SIZE" --consistency all >/dev/null 2>&1
  break
done

printf '%-5s %-8s %-12s | %-28s | %-28s | %s\n' api workload consistency \
  "3 nodes ops/s (p50/p99 ms)" "1 node ops/s (p50/p99 ms)" "ratio"
for protocol in $TARGETS; do
  for workload in $WORKLOADS; do
    read -r alone_ops alone_p50 alone_p99 _ <<<"$(measure "$(url "$single" "$protocol")" "$workload")"
    for level in $LEVELS; do
      read -r ops p50 p99 errors <<<"$(measure "$(url "$first" "$protocol")" "$workload" "$level")"
      ratio="$(awk -v a="$ops" -v b="$alone_ops" 'BEGIN { printf "%.2f", a / b }')"
      note=""; [ "$errors" != 0 ] && note=" ($errors errors)"
      printf '%-5s %-8s %-12s | %10s (%6s / %6s)  | %10s (%6s / %6s)  | %s%s\n' \
        "$protocol" "$workload" "$level" "$ops" "$p50" "$p99" "$alone_ops" "$alone_p50" "$alone_p99" "$ratio" "$note"
    done
  done
done
