"""On a running local stack (make up, or the e2e test's stack): every Prometheus target is up.

    make e2e-monitoring                                     # the stack of inventories/local
    VPCSTACK_STACK=e2e VPCSTACK_TEST_INVENTORY=... VPCSTACK_TEST_EXTRA_VARS=@tests/e2e/e2e-vars.yml \
        pytest tests/monitoring -m stack                    # another stack (e.g. the e2e test's)
"""

from __future__ import annotations

import os

import pytest
from conftest import REPO

import check_targets

pytestmark = pytest.mark.stack


def test_every_prometheus_target_is_up(capsys):
    inventory = os.environ.get("VPCSTACK_TEST_INVENTORY", str(REPO / "inventories/local"))
    extra = [e for e in os.environ.get("VPCSTACK_TEST_EXTRA_VARS", "").split() if e]
    ok = check_targets.check([inventory], extra, timeout=float(os.environ.get("VPCSTACK_TEST_TIMEOUT", "180")))
    print(capsys.readouterr().out)
    assert ok
