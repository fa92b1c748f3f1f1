# The customer path end to end on this machine (tests/customer, docs/gce.md "Real stand-ins"):
# site.yml -i <customer-x with another project id> against the GCE emulator with real stand-ins
# (emulator/gce_emulator --backing docker), a second run (changed=0), the data disks, the database
# endpoint through its internal LB over TLS, a switchover, the firewall. Included by the Makefile.
.PHONY: test-customer

test-customer: setup
	$(VENV)/bin/pytest tests/customer -q -p no:cacheprovider
