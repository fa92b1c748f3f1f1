# Inventories without hosts (tests/inventory): firewall sources checked before anything changes,
# the roles' own rule checks, and inventories/customer-x rendered on stand-in hosts. Seconds.
.PHONY: test-inventory

test-inventory: setup ## inventories without hosts: firewall sources, customer-x rendered
	$(VENV)/bin/pytest tests/inventory -q -p no:cacheprovider

TEST_TARGETS += test-inventory
