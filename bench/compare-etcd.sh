#!/usr/bin/env bash
# A strong keyspace on a 3-node loopback ringkv cluster beside a 3-member etcd cluster on the
# same machine, in one run: the same `ringkv bench` load against each (64 requests in
# flight, 100-byte values, uniform keys), spread over the three nodes of each. ringkv is
# driven through its REST API, etcd through its v3 JSON gateway: both HTTP/1.1 with JSON
# or raw bodies, from the same load generator.
#
# Prints writes (ringkv strong puts vs etcd puts) and linearizable reads (ringkv's default
# vs etcd's default range), each as ops/s with p50 / p99, and the ratio ringkv / etcd.
#
# Both sync every write to disk (ringkv's default `--sync always`; etcd always fsyncs its
# WAL). Every process shares this machine's cores.
#
# Usage: bench/compare-etcd.sh   (environment: N, RECORDS, CLIENTS, SIZE, SHARDS, RUNS)
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-40000}"; RECORDS="${RECORDS:-20000}"; CLIENTS="${CLIENTS:-64}"; SIZE="${SIZE:-100}"
SHARDS="${SHARDS:-8}"; RUNS="${RUNS:-1}"

source bench/common.sh
if ! command -v etcd >/dev/null; then
  echo "installing etcd-server..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
build_ringkv
with_work_dir

# --- ringkv: three nodes, one strong keyspace ---
start_dev_cluster ringkv 3
ringkv_http=("${cluster_http[@]}")
first="http://${ringkv_http[0]}"
curl -sf -X PUT "$first/v1/ks/bench" -d "{\"mode\": \"strong\", \"shards\": $SHARDS}" >/dev/null
# Every shard elects a leader and takes every node as a voter.
for _ in $(seq 300); do
  voters="$("$ringkv" cluster status --json --node "$first" 2>/dev/null | python3 -c '
import json, sys
shards = [s for m in json.load(sys.stdin)["members"] for s in (m.get("shards") or [])
          if s["group"].startswith("bench/")]
print(sum(1 for s in shards if sum(1 for m in s["members"] if m["voter"]) == 3))' || echo 0)"
  [ "$voters" -ge "$SHARDS" ] && break
  sleep 0.2
done
ringkv_target="http://$(IFS=,; echo "${ringkv_http[*]}")/v1/ks/bench"

# --- etcd: three members ---
port() { echo $((23790 + $1)); }
cluster=""
for i in 1 2 3; do cluster+="e$i=http://127.0.0.1:$(port $((i + 10))),"; done
cluster="${cluster%,}"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:$(port "$i")" \
    --advertise-client-urls "http://127.0.0.1:$(port "$i")" \
    --listen-peer-urls "http://127.0.0.1:$(port $((i + 10)))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$(port $((i + 10)))" \
    --initial-cluster "$cluster" --initial-cluster-state new \
    --log-level error >"$work/etcd$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$(port 1)/health" 2>/dev/null | grep -q true && break
  sleep 0.1
done
etcd_target="etcd://127.0.0.1:$(port 1),127.0.0.1:$(port 2),127.0.0.1:$(port 3)"

# Prints "ops/s p50_ms p99_ms errors" of a run.
measure() { # target workload
  "$ringkv" bench --target "$1" --workload "$2" --distribution uniform --records "$RECORDS" \
    -n "$N" -c "$CLIENTS" -d "$SIZE" --phase run --json 2>/dev/null | summarize_run
}

for target in "$ringkv_target" "$etcd_target"; do
  "$ringkv" bench --target "$target" --records "$RECORDS" --phase load -c "$CLIENTS" -d "$SIZE" \
    >/dev/null 2>&1
done

printf '%-22s | %-30s | %-30s | %s\n' operation "ringkv ops/s (p50 / p99 ms)" \
  "etcd ops/s (p50 / p99 ms)" "ratio"
for run in $(seq "$RUNS"); do
  for workload in ${WORKLOADS:-set get}; do
    read -r r_ops r_p50 r_p99 r_err <<<"$(measure "$ringkv_target" "$workload")"
    read -r e_ops e_p50 e_p99 e_err <<<"$(measure "$etcd_target" "$workload")"
    name="strong put"; [ "$workload" = get ] && name="linearizable get"
    ratio="$(awk -v a="$r_ops" -v b="$e_ops" 'BEGIN { printf "%.2f", a / b }')"
    note=""; [ "$r_err$e_err" != 00 ] && note=" (errors: ringkv $r_err, etcd $e_err)"
    printf '%-22s | %10s (%6s / %6s) | %10s (%6s / %6s) | %s%s\n' "$name (run $run)" \
      "$r_ops" "$r_p50" "$r_p99" "$e_ops" "$e_p50" "$e_p99" "$ratio" "$note"
  done
done
