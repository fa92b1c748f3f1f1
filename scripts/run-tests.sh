#!/usr/bin/env bash
# Runs each make target given, records its result and duration, and ends with one summary line
# ("N passed, N failed") that CI reads. Keeps going after a failure so one run shows them all.
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0; failed=0; failures=(); report=()
for target in "$@"; do
  echo "=== make $target"
  start=$(date +%s)
  if make --no-print-directory "$target"; then
    passed=$((passed + 1)); status=ok
  else
    failed=$((failed + 1)); status=FAILED; failures+=("$target")
  fi
  report+=("$(printf '%-22s %-7s %5ss' "$target" "$status" $(( $(date +%s) - start )))")
done
echo "=== summary"
printf '%s\n' "${report[@]}"
((failed)) && echo "failed targets: ${failures[*]}"
echo "$passed passed, $failed failed"
((failed == 0))
