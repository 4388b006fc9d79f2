#!/usr/bin/env bash
# The storage engines beside RocksDB: fillrandom then readrandom, one thread, 16-byte keys,
# the same record count and value size, no per-write sync (a sync at the end of the fill).
# ringkv's engines run through the Engine trait (`ringkv engine-bench`); RocksDB through its
# own db_bench (Debian rocksdb-tools). Prints one table with ratios engine / RocksDB.
#
# Usage: bench/compare-rocksdb.sh        (environment: KEYS, VALUE_SIZE, ENGINES)
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS="${KEYS:-1000000}"; VALUE_SIZE="${VALUE_SIZE:-100}"; ENGINES="${ENGINES:-lsm btree memory}"

if ! command -v db_bench >/dev/null; then
  echo "installing rocksdb-tools (db_bench)..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rocksdb-tools >/dev/null
fi
cargo build --release --quiet

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# db_bench prints e.g. "fillrandom   :       3.456 micros/op 289351 ops/sec ..."
rocksdb_ops() {
  grep -E "^$1 +:" "$work/rocksdb.txt" | awk '{ for (i = 1; i <= NF; i++) if ($(i+1) == "ops/sec;" || $(i+1) == "ops/sec") print $i }' | head -1
}
db_bench --benchmarks=fillrandom,readrandom --num="$KEYS" --reads="$KEYS" --key_size=16 \
  --value_size="$VALUE_SIZE" --threads=1 --sync=0 --compression_type=lz4 \
  --db="$work/rocksdb" >"$work/rocksdb.txt" 2>&1
rocks_fill="$(rocksdb_ops fillrandom)"
rocks_read="$(rocksdb_ops readrandom)"

printf '%-8s | %-24s | %-24s\n' engine "fillrandom ops/s (ratio)" "readrandom ops/s (ratio)"
printf '%-8s | %12.0f             | %12.0f\n' rocksdb "$rocks_fill" "$rocks_read"
for engine in $ENGINES; do
  target/release/ringkv engine-bench --engine "$engine" --keys "$KEYS" --value-size "$VALUE_SIZE" \
    --benchmarks fillrandom,readrandom --data-dir "$work/$engine" --json >"$work/$engine.json"
  fill="$(grep '"fillrandom"' "$work/$engine.json" | sed -E 's/.*"ops_per_second":([0-9.]+).*/\1/')"
  read="$(grep '"readrandom"' "$work/$engine.json" | sed -E 's/.*"ops_per_second":([0-9.]+).*/\1/')"
  printf '%-8s | %12.0f (%5.2f)     | %12.0f (%5.2f)\n' "$engine" "$fill" \
    "$(awk -v a="$fill" -v b="$rocks_fill" 'BEGIN { print a / b }')" "$read" \
    "$(awk -v a="$read" -v b="$rocks_read" 'BEGIN { print a / b }')"
done
