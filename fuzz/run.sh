#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 45) from the committed seeds (seeds/TARGET) and
# the local corpus (corpus/TARGET, not committed); fails on the first crash, leaving the input
# in artifacts/TARGET. Usage: fuzz/run.sh [SECONDS [TARGET...]]. See docs/FUZZING.md.
# CATTAIL_FUZZ_DEV=1 builds without optimizations: CI's short smoke runs build several times
# faster that way; a campaign wants the default, optimized build.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-45}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(frame hpack inbound connection_bytes connection_frames)
fi
# cargo-fuzz passes -Z flags to rustc; the stable toolchain accepts them with this set.
export RUSTC_BOOTSTRAP=1
# No sanitizer: the server forbids unsafe code, and panics are what the targets look for.
profile=()
if [ "${CATTAIL_FUZZ_DEV:-}" = 1 ]; then
  profile=(--dev)
fi
cargo fuzz build -s none "${profile[@]}"
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "== fuzz $target for ${seconds}s"
  cargo fuzz run -s none "${profile[@]}" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1
done
