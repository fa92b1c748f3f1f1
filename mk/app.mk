# The exposure API (app/): wheelhouse, tests, benchmark. Included by the root Makefile.
APP_PY := $(VENV)/bin/python
BENCH_FLOWS ?= 5000000
BENCH_CONCURRENCY ?= 8
BENCH_DURATION ?= 20
BENCH_RUNS ?= 3
BENCH_ARGS ?=

.PHONY: wheelhouse test-app bench-app

# dist/wheelhouse/<version>/: app wheel + every pinned dependency wheel, installable with
# `pip install --no-index --find-links` (checked offline in a fresh venv before it is published).
wheelhouse: setup ## the app's wheelhouse for its version in dist/wheelhouse/<version>/ (checked offline)
	@app/devtools/build-wheelhouse.sh $(APP_PY)

# The app's whole suite against a throwaway PostgreSQL 15 it starts itself (about a minute).
test-app: setup ## the app's own suite against a throwaway PostgreSQL
	$(VENV)/bin/pytest app/tests -q -p no:cacheprovider

# Not part of `make test`: seeds BENCH_FLOWS rows once, then BENCH_RUNS times loads the API and
# the same SQL at BENCH_CONCURRENCY for at most BENCH_DURATION s each; prints throughput, p50/p99,
# CPU per request by process, the ratio per run and the medians, and the plan.
bench-app: setup ## the app's throughput and latency against the same SQL alone (not in the suite)
	$(APP_PY) app/devtools/bench.py --flows $(BENCH_FLOWS) --concurrency $(BENCH_CONCURRENCY) \
		--duration $(BENCH_DURATION) --runs $(BENCH_RUNS) $(BENCH_ARGS)

TEST_TARGETS += test-app
