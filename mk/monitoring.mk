# Monitoring (roles prometheus, node_exporter, postgres_exporter; monitoring/) and the Redis
# extension example (role redis). Included by the root Makefile. docs/monitoring.md.
PROMTOOL := $(VENV)/bin/promtool

.PHONY: promtool test-alerts test-monitoring molecule-monitoring e2e-monitoring monitoring-generate

# promtool alone, unpacked from Debian's prometheus package (nothing else installed, no service).
promtool: setup ## promtool alone, from Debian's prometheus package
	@monitoring/tools/install-promtool.sh $(PROMTOOL)

# Every rule file checked, every unit test run, and each alert's tests mutation-checked: they
# must fail when the rule never fires and when it always fires.
test-alerts: promtool ## alert rules checked, unit-tested and mutation-checked with promtool
	$(PROMTOOL) check rules monitoring/rules/*.yml
	$(PROMTOOL) test rules monitoring/tests/*.test.yml
	$(VENV)/bin/python monitoring/tools/check_rule_tests.py $(PROMTOOL)

# Offline: dashboards and GCE alert policies in step with their sources and valid; Ops Agent
# configuration scraping the same endpoints; the policies' queries through the rules' unit tests;
# gce_apply.py against a local API double; the textfile collectors; the rendered Prometheus config.
test-monitoring: promtool ## dashboards, alert policies, Ops Agent configuration, collectors (offline)
	PROMTOOL=$(PROMTOOL) $(VENV)/bin/pytest tests/monitoring -q -p no:cacheprovider -m "not stack"

# Two stand-ins (Prometheus + Redis; a one-member Patroni cluster): converge, idempotence, checks.
molecule-monitoring: setup ## Molecule: Prometheus and the Redis example on two stand-ins
	molecule test -s monitoring

# Against the running stack of inventories/local (make up): every Prometheus target is up.
e2e-monitoring: setup ## every Prometheus target of the running local stack is up
	$(VENV)/bin/pytest tests/monitoring -q -p no:cacheprovider -m stack -s

# Regenerate the dashboards and the GCE alert policies after changing their sources.
monitoring-generate: setup ## regenerate the dashboards and GCE alert policies from their sources
	$(VENV)/bin/python monitoring/tools/dashboards.py generate
	$(VENV)/bin/python monitoring/tools/gce_alert_policies.py generate

TEST_TARGETS += test-alerts test-monitoring molecule-monitoring
