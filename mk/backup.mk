# Backups and restore (roles/pgbackrest, playbooks/backup.yml, playbooks/restore.yml; docs/database.md).
# test-restore: the restore drill (tests/restore) on its own small stack (one database host and the
# backup repository host; a stack of this checkout, `restore-<4 hex>` on 10.<100-199>.x like
# test-e2e's, with a lock per stack name): backups from nothing, the backup metrics, a
# point-in-time restore into a new host checked row by row against the data at the target; prints RTO, RPO and backup durations; tears the stack down.
.PHONY: test-restore

test-restore: setup
	$(VENV)/bin/pytest tests/restore -q -s -p no:cacheprovider

TEST_TARGETS += test-restore
