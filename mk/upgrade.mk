# Major PostgreSQL upgrade end to end (tests/upgrade, docs/database.md "Major upgrade"). Included
# by the root Makefile. Runs by name only (not in TEST_TARGETS).
# test-upgrade: site.yml with PostgreSQL 15.18 pinned on its own stack (upgrade, 10.53.x), invalid
# targets refused before any change, then playbooks/db_upgrade.yml to 17 (binary source) under
# constant load through the app LB and a writer probe through the database endpoint; asserts every
# member on 17, data checksum unchanged, every acknowledged write present, replicas streaming, the
# app answering; prints the write downtime, failed app requests and the upgrade's wall time;
# tears down. UPGRADE_KEEP=1 leaves the stack up; UPGRADE_REUSE=1 runs on a running, unupgraded one.
.PHONY: test-upgrade

test-upgrade: setup ## the major PostgreSQL upgrade and its rollback drill on its own local stack
	$(VENV)/bin/pytest tests/upgrade -q -s -p no:cacheprovider
