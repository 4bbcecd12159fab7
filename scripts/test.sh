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
  # VSTest's summary: "Passed!  - Failed:     0, Passed:    10, Skipped:     0, Total:    10, ..."
  summary="$(grep -E '^(Passed|Failed)!  - Failed:' "$log" | tail -n1)"
  if [ -z "$summary" ]; then
    echo "   no test summary (exit $rc); last lines:"; tail -n 30 "$log" | sed 's/^/   /'
    failed=$((failed + 1)); status=1
    continue
  fi
  f=$(sed -E 's/.*Failed: *([0-9]+).*/\1/' <<<"$summary")
  p=$(sed -E 's/.*Passed: *([0-9]+).*/\1/' <<<"$summary")
  s=$(sed -E 's/.*Skipped: *([0-9]+).*/\1/' <<<"$summary")
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  echo "   $summary"
  grep -E '^\s+(Failed|Skipped) ' "$log" | sed 's/^/   /' | head -n 50
  if [ "$f" -gt 0 ] || [ "$rc" -ne 0 ]; then
    status=1
    grep -A 12 'Error Message:' "$log" | head -n 80 | sed 's/^/   /'
    [ "$f" -eq 0 ] && failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
