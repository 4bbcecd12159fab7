#!/usr/bin/env bash
# Sets up the host (scripts/setup.sh) and runs every test project, one after another so that
# tests which start containerd, CNI networks and registries do not fight for the 2 cores.
# Ends with one line: "N passed, N failed, N skipped". Exit status is non-zero if anything failed.
#
#   scripts/test.sh                 all test projects
#   scripts/test.sh Oci Core        only tests/KataAgent.{Oci,Core}.Tests
set -uo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

if ! scripts/setup.sh; then
  echo "setup failed"
  echo "0 passed, 1 failed, 0 skipped"
  exit 1
fi
export KATA_RUNNER_BINARY="$repo_root/artifacts/runner/kata-runner"

projects=()
if [ "$#" -gt 0 ]; then
  for name in "$@"; do projects+=("tests/KataAgent.$name.Tests/KataAgent.$name.Tests.csproj"); done
else
  for p in tests/*.Tests/*.Tests.csproj; do projects+=("$p"); done
fi

logs="$repo_root/artifacts/test-logs"
mkdir -p "$logs"
passed=0; failed=0; skipped=0; status=0
for project in "${projects[@]}"; do
  name="$(basename "$project" .csproj)"
  echo "== $name"
  log="$logs/$name.log"
  dotnet test "$project" --no-build -nologo --logger "console;verbosity=normal" >"$log" 2>&1
  rc=$?
  # VSTest's closing block at normal verbosity: "Total tests: N" then "Passed: N", "Failed: N", "Skipped: N".
  if ! grep -qE '^Total tests: [0-9]+' "$log"; then
    echo "   no test summary (exit $rc); last lines:"; tail -n 30 "$log" | sed 's/^/   /'
    failed=$((failed + 1)); status=1
    continue
  fi
  count() { sed -n '/^Total tests:/,$p' "$log" | grep -E "^\s+$1: [0-9]+" | tail -n1 | grep -oE '[0-9]+' || echo 0; }
  p=$(count Passed); f=$(count Failed); s=$(count Skipped)
  summary="passed $p, failed $f, skipped $s"
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  echo "   $summary"
  # Name every failed and skipped test (a skip says what the host lacks).
  grep -E '^\s+(Failed|Skipped) [A-Za-z]' "$log" | sed 's/^/   /' | head -n 50
  if [ "$f" -gt 0 ] || [ "$rc" -ne 0 ]; then
    status=1
    grep -A 12 'Error Message:' "$log" | head -n 80 | sed 's/^/   /'
    [ "$f" -eq 0 ] && failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
