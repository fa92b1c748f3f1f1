"""roles/gce_api: a failure is reported with Google's message, the token stays out of the log."""
from __future__ import annotations

from gce_harness import HERE, STATIC_INVENTORY, TOKEN, run_playbook


def test_failure_message_without_token(validation_double):
    run = run_playbook(validation_double, "-vvv", inventory=STATIC_INVENTORY,
                       playbook=HERE / "playbooks" / "api_error.yml", timeout=300)
    assert run.rc != 0
    flat = " ".join(run.out.split())
    assert ("answered 404: The resource 'projects/customer-x-prod/global/networks/missing' was not found") in flat
    assert TOKEN not in run.out
