#!/usr/bin/env bash
# The fault lab's soak: every scenario (or those named), for longer than CI's short runs,
# repeated ROUNDS times, against the release binary. Prints, per run, the faults injected
# (with when), and a summary table: faults, operations and their outcomes (acknowledged,
# failed, unknown), acknowledged writes lost (must be 0), deleted values back (must be 0),
# and the time replicas took to converge (equal anti-entropy tree roots) after healing.
# Exits non-zero if any run lost a write, resurrected a delete or did not converge.
#
# As root, each node runs in a network namespace of its own (partitions and slow links
# work); otherwise on loopback addresses, and those scenarios are skipped.
#
# Usage: scripts/soak.sh [SCENARIO...]
#   environment: SECONDS_EACH (60) seconds of load per run, ROUNDS (3), KEYS (1000)
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${SECONDS_EACH:-60}"; ROUNDS="${ROUNDS:-3}"; KEYS="${KEYS:-1000}"

cargo build --release --quiet -p ringkv -p ringkv-faultlab
target/release/ringkv-faultlab --ringkv target/release/ringkv \
  --seconds "$SECONDS_EACH" --rounds "$ROUNDS" --keys "$KEYS" "$@"
