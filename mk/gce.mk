# GCE provisioning (roles/gce_*, playbooks/provision_gce.yml) against the local GCE emulator
# (emulator/gce_emulator): validation, the emulator's own API checks, two provisioning runs (the
# second must report changed=0), the resource graph, the dynamic inventory, resizing. Included by
# the root Makefile.
.PHONY: test-gce lint-gce

test-gce: setup ## GCE provisioning against the emulator's API (validation, two runs, resize, inventory)
	$(VENV)/bin/pytest tests/gce -q -p no:cacheprovider

# The GCE paths alone, with the repository's .yamllint and .ansible-lint.
lint-gce: setup ## yamllint and ansible-lint over the GCE paths alone
	$(VENV)/bin/yamllint -s roles/gce_* playbooks/provision_gce.yml inventories/customer-x tests/gce
	$(VENV)/bin/ansible-lint --profile production roles/gce_* playbooks/provision_gce.yml inventories/customer-x

TEST_TARGETS += test-gce
