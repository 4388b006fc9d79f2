#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each, and fails at the first
# crash, leak or timeout; the input that caused it is in fuzz/artifacts/<target>/. CI runs it
# for a few seconds a target; run it for longer by hand:
#
#   scripts/fuzz.sh            # 300 s per target
#   scripts/fuzz.sh 3600 rpc_frame rest_request
#
# Needs cargo-fuzz (cargo install cargo-fuzz --locked) and a nightly toolchain for the
# sanitizer flags; without one, the stable toolchain is asked to allow them
# (RUSTC_BOOTSTRAP=1).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-300}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  cargo=(cargo +nightly)
else
  export RUSTC_BOOTSTRAP=1
  cargo=(cargo)
fi
"${cargo[@]}" fuzz build -O
for target in "${targets[@]}"; do
  echo "== fuzzing $target for ${seconds}s"
  # Bytes of RAM and seconds per input are bounded so a runaway input is reported as one.
  log="$(mktemp)"
  status=0
  "${cargo[@]}" fuzz run "$target" -O -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E '^(Done|stat::number_of_executed_units|==[0-9]+==|SUMMARY|thread|Test unit)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    rm -f "$log"
    echo "fuzzing $target failed (exit $status): see fuzz/artifacts/$target/" >&2
    exit 1
  fi
  rm -f "$log"
done
echo "every target ran ${seconds}s without a failure"
