# Scaling by inventory counts (tests/scale, docs/runbooks.md "Scaling"). Included by the root
# Makefile. test-scale: site.yml on its own stack (scaling, 10.54.x), bad counts refused before any
# change, then under load through the app LB and a writer probe through the database endpoint:
# app 3 -> 4 and db 3 -> 5, then app 4 -> 2 and db 5 -> 3, each a re-run of site.yml with the
# counts changed; topology, zero failed requests and zero lost writes asserted; figures printed;
# tears down. SCALE_KEEP=1 leaves the stack up; SCALE_REUSE=1 runs on a running 3/3 stack.
.PHONY: test-scale

test-scale: setup ## scaling out and in under load on its own local stack
	$(VENV)/bin/pytest tests/scale -q -s -p no:cacheprovider

# Runs by name only (not in TEST_TARGETS): about as long as test-e2e on 2 shared cores.
