# Backups and restore (roles/pgbackrest, playbooks/backup.yml, playbooks/restore.yml; docs/database.md).
# test-restore: the restore drill (tests/restore) on its own small local stack (one database host and
# the backup repository host; a stack of this checkout, `restore-<4 hex>` on 10.<100-199>.x like
# test-e2e's, with a lock per stack name): backups from nothing, the backup metrics, a
# point-in-time restore into a new host checked row by row against the data at the target; prints
# RTO, RPO and backup durations; tears the stack down.
# Runs by name: `make test` runs the same drill on the customer path instead (test-customer: the
# GCS repository, the restore VM created through the API, the same checks and figures), which
# keeps the suite within its time budget; this one still covers the local repository host (TLS).
.PHONY: test-restore

test-restore: setup ## the restore drill on a small local stack (local repository host)
	$(VENV)/bin/pytest tests/restore -q -s -p no:cacheprovider
