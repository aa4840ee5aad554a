"""Shared fixtures: one Prefect test server for the whole session, real catalog databases.

* ``prefect_api`` (session, autouse): Prefect's own test harness, started once.
* ``catalog_url``: a fresh SQLite catalog for the test (``PREFECT_JOBS_DATABASE_URL``).
* ``any_catalog_url``: the same test on SQLite and on PostgreSQL (skipped, with the reason,
  where no PostgreSQL server is reachable).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import jobs_plugin as jp
from jobs_plugin import db
from jobs_plugin.data import store as data_store
from jobs_plugin.settings import get_settings

POSTGRES_ADMIN_URL = os.environ.get(
    "PREFECT_JOBS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session", autouse=True)
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def _use_catalog(monkeypatch: pytest.MonkeyPatch, url: str, home: Path) -> None:
    """Point the settings at ``url`` and the home folder (so the data store and file bytes)
    at ``home`` for one test; monkeypatch restores the environment."""
    monkeypatch.setenv("PREFECT_JOBS_DATABASE_URL", url)
    monkeypatch.setenv("PREFECT_JOBS_HOME", str(home))
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    yield
    get_settings.cache_clear()


@pytest.fixture
def catalog_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh SQLite catalog, with the test workflows registered."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    _use_catalog(monkeypatch, url, tmp_path / "home")
    jp.register_module("tests.workflows")
    yield url
    _dispose()


def _dispose() -> None:
    """Close the catalog's and the data store's connections (their files go with tmp_path)."""
    db.dispose_all()
    data_store.dispose_all()


def _postgres_database() -> str:
    """Create a scratch database on the test server; skip when none is reachable."""
    import sqlalchemy as sa

    try:
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            name = f"prefect_jobs_test_{uuid.uuid4().hex[:10]}"
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
    except Exception as exc:  # no server, no driver, no rights
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc.__class__.__name__}")
    return str(sa.make_url(POSTGRES_ADMIN_URL).set(database=name))


def _drop_postgres_database(url: str) -> None:
    import sqlalchemy as sa

    db.dispose_all()
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{sa.make_url(url).database}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_catalog_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        url = _postgres_database()
    _use_catalog(monkeypatch, url, tmp_path / "home")
    jp.register_module("tests.workflows")
    yield url
    if request.param == "postgresql":
        data_store.dispose_all()
        _drop_postgres_database(url)
    else:
        _dispose()
