# Monitoring (roles prometheus, node_exporter, postgres_exporter; monitoring/) and the Redis
# extension example (role redis). Included by the root Makefile.
PROMTOOL := $(VENV)/bin/promtool

.PHONY: promtool test-alerts

# promtool alone, unpacked from Debian's prometheus package (nothing else installed, no service).
promtool: setup
	@monitoring/tools/install-promtool.sh $(PROMTOOL)

# Every rule file checked, every unit test run, and each alert's tests mutation-checked: they
# must fail when the rule never fires and when it always fires.
test-alerts: promtool
	$(PROMTOOL) check rules monitoring/rules/*.yml
	$(PROMTOOL) test rules monitoring/tests/*.test.yml
	$(VENV)/bin/python monitoring/tools/check_rule_tests.py $(PROMTOOL)

TEST_TARGETS += test-alerts
