# The app tier end to end (tests/e2e, docs/app-tier.md). Included by the root Makefile.
# test-e2e: site.yml from nothing on its own stack (e2e-<hash>, 10.<100-199>.x), second run changed=0, the
# allowlist on every path, a rolling deploy under constant load (zero failed requests), an
# unhealthy release, a rollback, an instance stopped under load; prints the figures, tears down.
# bench-deploy: the deploy and stop figures as the median of BENCH_DEPLOY_RUNS (>= 3) runs.
BENCH_DEPLOY_RUNS ?= 3
BENCH_DEPLOY_RATE ?= 20
BENCH_DEPLOY_ARGS ?=

.PHONY: test-e2e bench-deploy

test-e2e: setup
	$(VENV)/bin/pytest tests/e2e -q -s -p no:cacheprovider

bench-deploy: setup
	$(VENV)/bin/python tests/e2e/bench.py --runs $(BENCH_DEPLOY_RUNS) --rate $(BENCH_DEPLOY_RATE) $(BENCH_DEPLOY_ARGS)

TEST_TARGETS += test-e2e
