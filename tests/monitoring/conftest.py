"""Shared fixtures of the monitoring tests (make test-monitoring; make e2e-monitoring for -m stack)."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def pytest_configure(config):
    config.addinivalue_line("markers", "stack: needs a running local stack with a monitoring host (make e2e-monitoring)")


@pytest.fixture(scope="session")
def promtool() -> str:
    path = os.environ.get("PROMTOOL") or str(REPO / ".venv/bin/promtool")
    if not os.path.exists(path):
        pytest.fail(f"promtool not found at {path}: run `make promtool` (make test-monitoring does)")
    return path


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
