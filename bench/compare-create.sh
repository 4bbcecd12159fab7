#!/usr/bin/env bash
# Interleaved create benchmark of two builds on the same machine (each variant in turn, so load drifts hit both).
# Usage: BASE=/path/to/other/checkout bench/compare-create.sh [RUNTIME] [ROUNDS] [RUNS]
#   BASE must hold a Release build of bench/KataAgent.Bench and a published runner (scripts/publish-runner.sh).
#   KATA_BENCH_SCRATCH_BYTES=0 (the default here) leaves the per-session scratch disk out of both.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base="${BASE:?set BASE to the checkout to compare with}"
runtime="${1:-gvisor}"; rounds="${2:-2}"; runs="${3:-10}"
export KATA_BENCH_SCRATCH_BYTES="${KATA_BENCH_SCRATCH_BYTES:-0}"
for round in $(seq 1 "$rounds"); do
  for checkout in "$base" "$here"; do
    figures=$(KATA_RUNNER_DIR="$checkout/artifacts/runner" "$checkout/bench/KataAgent.Bench/bin/Release/net10.0/kata-agent-bench" \
        create --runs "$runs" --runtime "$runtime" 2>&1 \
      | grep -E "create → runner|step 'network'|step 'container'|step 'wait-runner'" | awk -F'|' '{printf "%s=%s ", $2, $5}')
    echo "$checkout round $round $(date +%T): $figures"
  done
done
