# The data layer (issue 4): pki, etcd, postgresql, patroni, db_endpoint. See docs/database.md.
.PHONY: molecule-patroni bench-failover test-data-disk

# Three database containers + the endpoint: topology, TLS/SCRAM, least privilege, parameters
# (reload and rolling restart), failover, data-disk replacement, idempotence.
# The scenario's stack name and subnets are fixed (mpatroni, 10.44.x): a lock keeps two checkouts
# on one machine (a CI workspace and a working copy) from running it at the same time.
PATRONI_LOCK := /tmp/vpcstack-molecule-patroni.lock

molecule-patroni: setup ## Molecule: three database containers and the endpoint (TLS, failover, parameters)
	flock $(PATRONI_LOCK) molecule test -s patroni

TEST_TARGETS += molecule-patroni

# roles/data_disk's GCE path (format once, mount by UUID, grow, never reformat) on a loop device
# of this machine, with its own fstab file; needs root.
test-data-disk: setup ## roles/data_disk's GCE path on a loop device (format once, mount, grow)
	$(VENV)/bin/pytest tests/data_disk -q -p no:cacheprovider

TEST_TARGETS += test-data-disk

# Not part of `make test`: >= 5 clean stops and >= 5 hard kills of the leader under write load.
# BENCH_STACK=<stack> runs it on an existing local stack instead of a throwaway one;
# BENCH_RUNS=<n> events of each kind (default 5); BENCH_JSON=<file> also writes the figures.
bench-failover: setup ## failover figures: clean stops and hard kills of the leader under writes
	@if [ -n "$(BENCH_STACK)" ]; then tests/failover/run.sh; else flock $(PATRONI_LOCK) tests/failover/run.sh; fi
