"""Catalog engines and sessions; migrations are applied on first use of a database URL.

SQLite runs in WAL mode with a busy timeout. Writers open their transaction with
``BEGIN IMMEDIATE`` (a separate engine) so that two processes never both hold a read lock they
then try to upgrade, which SQLite would answer with an immediate "database is locked".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from jobs_plugin.settings import get_settings

logger = logging.getLogger("prefect_jobs.db")

_MIGRATIONS = Path(__file__).parent / "migrations"
_lock = threading.Lock()
_engines: dict[str, Catalog] = {}


@dataclass(frozen=True)
class Catalog:
    """The engines of one catalog database: ``reader`` for queries, ``writer`` for changes."""

    url: str
    reader: Engine
    writer: Engine


def _sqlite_engine(
    url: str, *, immediate: bool, busy_timeout: float, autocheckpoint: int | None = None
) -> Engine:
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        if autocheckpoint is not None:
            cursor.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _build(url: str, *, writer_autocheckpoint: int | None = None) -> Catalog:
    """Engines for ``url``; on SQLite, ``writer_autocheckpoint`` sets the writers'
    ``wal_autocheckpoint`` (pages; SQLite's default 1,000 otherwise)."""
    settings = get_settings()
    if url.startswith("sqlite"):
        database = sa.make_url(url).database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        busy = settings.sqlite_busy_timeout_seconds
        return Catalog(
            url,
            _sqlite_engine(url, immediate=False, busy_timeout=busy),
            _sqlite_engine(
                url, immediate=True, busy_timeout=busy, autocheckpoint=writer_autocheckpoint
            ),
        )
    engine = sa.create_engine(url, pool_pre_ping=True)
    return Catalog(url, engine, engine)


def migrate(catalog: Catalog) -> None:
    """Bring the schema to the newest revision. Safe when several processes start at once."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with catalog.writer.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_lock(827261)")
        try:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
        finally:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_unlock(827261)")
                conn.commit()


def get_catalog(url: str | None = None) -> Catalog:
    """The (migrated) catalog for ``url``, or for the settings' database URL."""
    url = url or get_settings().resolved_database_url
    with _lock:
        catalog = _engines.get(url)
        if catalog is None:
            catalog = _build(url)
            migrate(catalog)
            _engines[url] = catalog
    return catalog


def dispose_all() -> None:
    """Close every pooled connection (tests, and processes about to fork)."""
    with _lock:
        for catalog in _engines.values():
            catalog.reader.dispose()
            catalog.writer.dispose()
        _engines.clear()


@contextmanager
def read_session(url: str | None = None) -> Iterator[Session]:
    with Session(get_catalog(url).reader, expire_on_commit=False) as session:
        yield session


EVENTS_WRITTEN = "prefect_jobs.events_written"
"""The ``session.info`` list of the events a transaction adds, handed to listeners on commit."""
EventListener = Callable[[Sequence[Any]], None]
_event_listeners: list[EventListener] = []


def listen_for_events(listener: EventListener) -> Callable[[], None]:
    """Call ``listener`` with the events a commit in this process wrote (from the committing
    thread, after the commit); returns the function that stops it. Events written by other
    processes are not heard of here: whoever needs those polls."""
    _event_listeners.append(listener)
    return lambda: _event_listeners.remove(listener) if listener in _event_listeners else None


@contextmanager
def write_session(url: str | None = None) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error."""
    with Session(get_catalog(url).writer, expire_on_commit=False) as session:
        with session.begin():
            yield session
        events = session.info.pop(EVENTS_WRITTEN, None)
        if events:
            for listener in list(_event_listeners):
                try:
                    listener(events)
                except Exception:  # a listener's failure is not the writer's
                    logger.exception("event listener failed")
