#!/usr/bin/env bash
# Soak version of the kill -9 crash test: many iterations per engine, release build.
# Usage: bench/crash-soak.sh [ITERATIONS]   (default 50)
set -euo pipefail
cd "$(dirname "$0")/.."
iterations="${1:-50}"
RINGKV_CRASH_ITERATIONS="$iterations" cargo test --release -p ringkv --test crash -- --nocapture --test-threads 1
