# The app tier end to end (tests/e2e, docs/app-tier.md). Included by the root Makefile.
# test-e2e: the local platform: site.yml from nothing on its own stack (e2e-<hash>, 10.<100-199>.x),
# second run changed=0, every Prometheus target, the allowlist on every path (HAProxy's own list
# too), a rolling deploy through HAProxy under constant load (zero failed requests), an instance
# stopped and one killed under load; prints the figures, tears down. The unhealthy release, its
# rollback and the app plays on a release deployed elsewhere run on the customer path (test-customer).
# bench-deploy: the deploy and stop figures as the median of BENCH_DEPLOY_RUNS (>= 3) runs.
BENCH_DEPLOY_RUNS ?= 3
BENCH_DEPLOY_RATE ?= 20
BENCH_DEPLOY_ARGS ?=

.PHONY: test-e2e bench-deploy

test-e2e: setup ## the local platform end to end (HAProxy, Prometheus, deploy and faults under load)
	$(VENV)/bin/pytest tests/e2e -q -s -p no:cacheprovider

bench-deploy: setup ## rolling deploy, stop and kill figures: medians of several runs
	$(VENV)/bin/python tests/e2e/bench.py --runs $(BENCH_DEPLOY_RUNS) --rate $(BENCH_DEPLOY_RATE) $(BENCH_DEPLOY_ARGS)

TEST_TARGETS += test-e2e
