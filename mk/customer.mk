# The customer path end to end on this machine (tests/customer, docs/gce.md "Real stand-ins"):
# site.yml -i <customer-x with another project id> against the GCE emulator with real stand-ins
# (emulator/gce_emulator --backing docker), a second run (changed=0), the data disks, the database
# endpoint through its internal LB over TLS, the Ops Agent's configuration and endpoint checks, a
# switchover, a host error and a partition of the primary under writes (0 acknowledged writes lost),
# the toy request through the app's internal LB from the allowlist and nothing from outside it,
# backups in the GCS bucket and a point-in-time restore from it into a VM restore.yml creates.
# Included by the Makefile; part of `make test` (its run time: docs/gce.md).
.PHONY: test-customer

test-customer: setup ## site.yml with customer-x on the GCE emulator's stand-ins, and the day-2 checks on it
	$(VENV)/bin/pytest tests/customer -q -p no:cacheprovider

TEST_TARGETS += test-customer
