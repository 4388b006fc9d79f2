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
