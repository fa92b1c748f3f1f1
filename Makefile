# vpcstack.platform — entry points. Every target installs what it needs first (scripts/setup.sh
# is idempotent and quiet when everything is in place).
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
PURGE ?= 0

# Fragments in mk/ add their own targets and append to TEST_TARGETS (run in order by `make test`).
TEST_TARGETS :=

.PHONY: help setup up down test lint syntax collection molecule-common molecule-local
# Every target says what it does on its own line: `target: prerequisites ## one line`.
help: ## this list (the targets `make test` runs are marked *)
	@grep -hE '^[a-z][a-z0-9-]*:[^=].*## ' $(MAKEFILE_LIST) | sort | \
		awk -v suite=" $(TEST_TARGETS) " '{ name = $$0; sub(/:.*/, "", name); text = $$0; sub(/^[^#]*## /, "", text); \
			printf "%s %-22s %s\n", (index(suite, " " name " ") ? "*" : " "), name, text }'

setup: ## install what the targets need (Debian packages, dockerd, the venv, the base image); idempotent
	@scripts/setup.sh

up: setup ## the whole stack on this machine (inventories/local)
	ansible-playbook site.yml -i inventories/local

down: setup ## remove the local stack's containers and networks (PURGE=1: its data volumes too)
	ansible-playbook playbooks/teardown_local.yml -i inventories/local -e teardown_purge_volumes=$(PURGE)

lint: setup ## yamllint and ansible-lint (production profile) over the repository
	yamllint -s .
	ansible-lint --profile production

syntax: setup ## ansible-playbook --syntax-check of every playbook against both inventories
	@scripts/syntax-check.sh

collection: setup ## build the collection, install it outside the checkout, resolve its roles by full name
	@scripts/collection-check.sh

molecule-common: setup ## Molecule: the baseline role (common) on a stand-in, testinfra, idempotence
	molecule test -s common

molecule-local: setup ## Molecule: the local platform (provision, baseline, second run changed=0)
	molecule test -s local

include $(sort $(wildcard mk/*.mk))

# Scenarios that run by name and stay out of `make test` until they pass reliably on a clean
# clone (see the issues). molecule-monitoring: fixed after two failures on a quiet machine and
# passed once since (docs/monitoring.md); the whole stack's monitoring is checked by test-e2e.
NOT_YET_IN_SUITE := molecule-monitoring

# molecule-local (the local platform's provisioning, baseline and second run) runs by name since
# patch.yml joined test-customer: test-e2e builds the same platform from nothing and checks its
# second run (changed=0), molecule-common the baseline; its own checks (teardown keeps the data
# volumes, an even etcd count refused) are about the local platform, which issue 14 retires.
# Order: cheap static checks first, then the scenarios.
TEST_TARGETS := lint syntax collection $(filter-out $(NOT_YET_IN_SUITE),$(TEST_TARGETS)) molecule-common

test: setup ## the whole suite, each target marked * in order; ends with "N passed, N failed"
	@scripts/run-tests.sh $(TEST_TARGETS)
