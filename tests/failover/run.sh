#!/usr/bin/env bash
# make bench-failover: the failover bench (tests/failover/bench.py) on a throwaway stack built by
# the Molecule `patroni` scenario (create + converge, destroyed afterwards), or, with
# BENCH_STACK=<name>, on an existing local stack (e.g. BENCH_STACK=vpcstack after `make up`).
# Figures and how to read them: docs/database.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${BENCH_RUNS:-5}
out=${BENCH_JSON:-}
args=(--runs "$runs")
[[ -n $out ]] && args+=(--json "$out")
if [[ -n ${BENCH_STACK:-} ]]; then
  exec python3 tests/failover/bench.py --stack "$BENCH_STACK" "${args[@]}"
fi
cleanup() { molecule destroy -s patroni >/dev/null 2>&1 || echo "bench: molecule destroy -s patroni failed" >&2; }
trap cleanup EXIT
echo "bench: building the throwaway stack (molecule create/converge -s patroni)"
log=$(mktemp /tmp/vpcstack-bench-build.XXXXXX)
molecule destroy -s patroni >"$log" 2>&1 || true
if ! { molecule create -s patroni && molecule converge -s patroni; } >"$log" 2>&1; then
  tail -40 "$log" >&2; echo "bench: building the stack failed (full log: $log)" >&2; exit 1
fi
rm -f "$log"
python3 tests/failover/bench.py --stack mpatroni "${args[@]}"
