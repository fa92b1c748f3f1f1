# The data layer (issue 4): pki, etcd, postgresql, patroni, db_endpoint. See docs/database.md.
.PHONY: molecule-patroni bench-failover

# Three database containers + the endpoint: topology, TLS/SCRAM, least privilege, parameters
# (reload and rolling restart), failover, data-disk replacement, idempotence.
molecule-patroni: setup
	molecule test -s patroni

TEST_TARGETS += molecule-patroni

# Not part of `make test`: >= 5 clean stops and >= 5 hard kills of the leader under write load.
# BENCH_STACK=<stack> runs it on an existing local stack instead of a throwaway one;
# BENCH_RUNS=<n> events of each kind (default 5); BENCH_JSON=<file> also writes the figures.
bench-failover: setup
	@tests/failover/run.sh
