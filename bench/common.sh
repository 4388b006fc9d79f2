# Shared by the benchmark scripts; source it from the repository root.

# Builds the release binary and sets `ringkv` to its path.
build_ringkv() {
  cargo build --release --quiet
  ringkv=target/release/ringkv
}

# Installs redis-server and redis-tools (redis-benchmark, redis-cli) unless both are present.
need_redis() {
  if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "installing redis-server and redis-tools..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
  fi
}

# Waits up to 10 s for a Redis-protocol server on 127.0.0.1:PORT to answer PING; exits if none.
wait_ready() { # port
  for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "server on port $1 did not start" >&2; exit 1
}

# Makes a scratch directory `$work` and a list `pids` of background processes, both cleaned
# up (processes killed, directory removed) when the script exits.
with_work_dir() {
  work="$(mktemp -d)"
  pids=()
  trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}

# Addresses of node I of a loopback cluster whose node i listens on BASE_PORT + 10 i (REST),
# + 1 (Redis protocol) and + 2 (cluster); and the time in milliseconds.
http() { echo "http://127.0.0.1:$((BASE_PORT + 10 * $1))"; }
resp() { echo "$((BASE_PORT + 10 * $1 + 1))"; }
listen() { echo "127.0.0.1:$((BASE_PORT + 10 * $1 + 2))"; }
now_ms() { date +%s%3N; }

# Starts `ringkv dev-cluster --nodes COUNT` in $work/NAME (logging to $work/NAME.log), waits
# until its first node sees every node alive and joined, and sets `cluster_http` to the
# nodes' REST addresses (host:port), in order.
start_dev_cluster() { # name count
  "$ringkv" dev-cluster --nodes "$2" --base-port 0 --data-dir "$work/$1" >"$work/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do
    [ "$(grep -c ' http=' "$work/$1.log" || true)" -ge "$2" ] && break
    sleep 0.1
  done
  mapfile -t cluster_http < <(grep -o ' http=[^ ]*' "$work/$1.log" | cut -d= -f2 | head -"$2")
  [ "${#cluster_http[@]}" -eq "$2" ] || { echo "the cluster did not start" >&2; cat "$work/$1.log" >&2; exit 1; }
  for _ in $(seq 300); do
    alive="$("$ringkv" cluster status --json --node "http://${cluster_http[0]}" 2>/dev/null |
      grep -o '"status":"normal","liveness":"alive"' | wc -l || true)"
    [ "$alive" -ge "$2" ] && return 0
    sleep 0.1
  done
  echo "the cluster's nodes did not all join" >&2; exit 1
}

# Reads one `ringkv bench --json` run phase on stdin and prints "ops/s p50_ms p99_ms errors"
# (p50 and p99 of the operation type with the worst p99).
summarize_run() {
  python3 -c '
import json, sys
run = json.load(sys.stdin)
ops = list(run["operations"].values())
worst = max(ops, key=lambda o: o["p99_us"])
print("%.0f %.2f %.2f %d" % (run["ops_per_second"], worst["p50_us"] / 1000, worst["p99_us"] / 1000,
      sum(o["errors"] for o in ops)))'
}
