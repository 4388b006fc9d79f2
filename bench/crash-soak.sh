#!/usr/bin/env bash
# Soak version of the kill -9 crash test: many iterations per engine, release build.
# Usage: bench/crash-soak.sh [ITERATIONS]   (default 50)
# Large RESP values and later kills make each iteration cross memtable seals, flushes and log
# files written over as later logs, e.g.:
#   RINGKV_CRASH_RESP_PAD_BYTES=16384 RINGKV_CRASH_RESP_KILL_MS=12000 bench/crash-soak.sh 5
set -euo pipefail
cd "$(dirname "$0")/.."
iterations="${1:-50}"
RINGKV_CRASH_ITERATIONS="$iterations" cargo test --release -p ringkv --test crash -- --nocapture --test-threads 1
