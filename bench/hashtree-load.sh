#!/usr/bin/env bash
# Whether the anti-entropy hash trees keep up with a cluster's writes: a 3-node loopback
# cluster takes `ringkv bench` SETs as fast as it can (consistency one, so the clients are
# never held back by the slowest replica) while every node's /metrics is sampled every
# 0.5 s. Prints, per node: the largest number of changes waiting to be hashed, changes
# dropped because the queue was full (each batch of them costs a rebuild), rebuilds, and
# whether the trees were up to date at the end; and the write rate the cluster sustained.
#
# Usage: bench/hashtree-load.sh   (environment: N, CLIENTS, SIZE, RECORDS)
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-400000}"; CLIENTS="${CLIENTS:-64}"; SIZE="${SIZE:-100}"; RECORDS="${RECORDS:-200000}"

source bench/common.sh
build_ringkv
with_work_dir

field() { grep -o "$2=[^ ]*" <<<"$1" | head -1 | cut -d= -f2; }

"$ringkv" dev-cluster --nodes 3 --base-port 0 --data-dir "$work/cluster" >"$work/cluster.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do
  [ "$(grep -c ' http=' "$work/cluster.log" || true)" -ge 3 ] && break
  sleep 0.1
done
mapfile -t nodes < <(grep ' http=' "$work/cluster.log" | head -3)
first="http://$(field "${nodes[0]}" http)"
for _ in $(seq 300); do
  alive="$("$ringkv" cluster status --json --node "$first" 2>/dev/null |
    grep -o '"status":"normal","liveness":"alive"' | wc -l || true)"
  [ "$alive" -ge 3 ] && break
  sleep 0.1
done
https=()
for line in "${nodes[@]}"; do https+=("http://$(field "$line" http)"); done

# Samples every node's tree metrics until the file "$work/stop" appears.
sample() {
  python3 - "$work/stop" "${https[@]}" <<'EOF'
import os, sys, time, urllib.request
stop, urls = sys.argv[1], sys.argv[2:]
peak = {u: 0.0 for u in urls}
last = {}
def metrics(url):
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("ringkv_store_hash_trees_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out
while True:
    done = os.path.exists(stop)
    for url in urls:
        try:
            m = metrics(url)
        except Exception:
            continue
        peak[url] = max(peak[url], m.get("ringkv_store_hash_trees_queued", 0))
        last[url] = m
    if done:
        break
    time.sleep(0.5)
for i, url in enumerate(urls):
    m = last.get(url, {})
    print("node-%d | %12d | %8d | %8d | %s" % (
        i, peak[url], m.get("ringkv_store_hash_trees_dropped_total", -1),
        m.get("ringkv_store_hash_trees_rebuilds_total", -1),
        "yes" if m.get("ringkv_store_hash_trees_ready", 0) == 1 else "no"))
EOF
}

# The trees turn on with the first anti-entropy exchange; wait for them on every node.
for _ in $(seq 600); do
  ready=0
  for url in "${https[@]}"; do
    curl -s "$url/metrics" | grep -q '^ringkv_store_hash_trees_ready 1' && ready=$((ready + 1))
  done
  [ "$ready" -ge 3 ] && break
  sleep 0.5
done

sample >"$work/samples" &
sampler=$!
"$ringkv" bench --target "redis://$(field "${nodes[0]}" resp)" --workload set --records "$RECORDS" \
  -n "$N" -c "$CLIENTS" -d "$SIZE" --phase run --consistency one --json 2>/dev/null >"$work/run.json"
# Give the trees a moment to drain what is queued, then take the last sample.
sleep 3
touch "$work/stop"
wait "$sampler"

python3 - "$work/run.json" <<'EOF'
import json, sys
run = json.load(open(sys.argv[1]))
count = sum(o["count"] for o in run["operations"].values())
errors = sum(o["errors"] for o in run["operations"].values())
print("writes: %d SETs (%d errors) at consistency one in %.1f s: %.0f ops/s" % (
    count, errors, run["seconds"], run["ops_per_second"]))
EOF
printf '%-6s | %12s | %8s | %8s | %s\n' node "peak queued" dropped rebuilds "ready at end"
cat "$work/samples"
