"""Fixtures: one throwaway PostgreSQL 15 (TLS + SCRAM) for the whole session, migrated and
seeded with a small deterministic data set; a Flask test client on top."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP_DIR / "devtools"))

from pgcluster import PgCluster  # noqa: E402

from exposure_api import db  # noqa: E402
from exposure_api.config import Settings  # noqa: E402
from exposure_api.migrate import connect_owner, migrate  # noqa: E402
from exposure_api.seed import load  # noqa: E402

SEED_FLOWS = 20_000


@pytest.fixture(scope="session")
def pg():
    cluster = PgCluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def settings(pg) -> Settings:
    return Settings.from_env(pg.env())


@pytest.fixture(scope="session")
def seeded(pg, settings):
    conn = connect_owner(settings)
    try:
        migrate(conn, settings.db_user)
        load(conn, SEED_FLOWS, seed=1, log=lambda _s: None)
    finally:
        conn.close()
    return SEED_FLOWS


@pytest.fixture(scope="session")
def app(seeded, settings):
    from exposure_api.web import create_app
    application = create_app(settings)
    yield application
    db.reset_pool()


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def owner_conn(seeded, settings):
    conn = connect_owner(settings)
    conn.autocommit = True
    yield conn
    conn.close()


def pytest_collection_modifyitems(items):
    # Keep the slow end-to-end tests (gunicorn subprocesses, database restarts) last.
    items.sort(key=lambda item: 1 if item.get_closest_marker("slow") else 0)
