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
help:
	@echo "make up       the whole stack on this machine (inventories/local)"
	@echo "make test     the whole test suite (installs what it needs first)"
	@echo "make down     remove containers and networks (PURGE=1 also removes data volumes)"

setup:
	@scripts/setup.sh

up: setup
	ansible-playbook site.yml -i inventories/local

down: setup
	ansible-playbook playbooks/teardown_local.yml -i inventories/local -e teardown_purge_volumes=$(PURGE)

lint: setup
	yamllint -s .
	ansible-lint --profile production

syntax: setup
	@scripts/syntax-check.sh

collection: setup
	@scripts/collection-check.sh

molecule-common: setup
	molecule test -s common

molecule-local: setup
	molecule test -s local

include $(sort $(wildcard mk/*.mk))

# Scenarios that run by name and stay out of `make test` until they pass reliably on a clean
# clone (see the issues). molecule-monitoring: fixed after two failures on a quiet machine and
# passed once since (docs/monitoring.md); the whole stack's monitoring is checked by test-e2e.
NOT_YET_IN_SUITE := molecule-monitoring

# Order: cheap static checks first, then the scenarios.
TEST_TARGETS := lint syntax collection $(filter-out $(NOT_YET_IN_SUITE),$(TEST_TARGETS)) molecule-common molecule-local

test: setup
	@scripts/run-tests.sh $(TEST_TARGETS)
