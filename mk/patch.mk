# patch.yml end to end (tests/patch, docs/runbooks.md "Patch day"). Included by the root Makefile.
# test-patch: site.yml with PostgreSQL 15.18 pinned on its own stack (patch, 10.51.x), then
# patch.yml with the image's real pending security updates and the pin moved to 15.20, under
# constant load through the app LB and a writer probe through the database endpoint; zero failed
# requests required (PATCH_STRICT=0: outside the switchover window only); one replica and one app
# instance flagged as needing a reboot (exactly they reboot); prints the failed requests and the
# write unavailability; tears down. PATCH_KEEP=1 leaves the stack up; PATCH_REUSE=1 runs on a
# running, unpatched one.
.PHONY: test-patch

test-patch: setup ## patch.yml under load on its own local stack, with the minor PostgreSQL upgrade
	$(VENV)/bin/pytest tests/patch -q -s -p no:cacheprovider

# Not in `make test` yet (about half an hour on 2 shared cores): it runs by name, like test-e2e,
# until verified on a clean clone.

# The os_patch role alone on one stand-in (molecule/os_patch): the base image's real pending
# security updates applied, a held package skipped, PostgreSQL moved to its pin and held, the
# reboot a package asks for, the evidence of both runs; the idempotence run applies nothing.
.PHONY: molecule-os-patch

molecule-os-patch: setup ## Molecule: the os_patch role (security updates, reboot flags, evidence)
	molecule test -s os_patch

TEST_TARGETS += molecule-os-patch
