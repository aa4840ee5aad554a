"""The SQLite data store's write-ahead log is copied back into the database by the background
checkpointer after bulk chunks, not by the committing writer."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs_plugin.data import store, wal
from jobs_plugin.data.models import SheetConfig
from jobs_plugin.settings import get_settings

ORG = "us_org_a"


@pytest.fixture
def data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "data.db"
    monkeypatch.setenv("PREFECT_JOBS_DATA_URL", f"sqlite:///{path}")
    monkeypatch.setenv("PREFECT_JOBS_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield path
    store.dispose_all()


def _wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the background checkpoint did not happen"
        time.sleep(0.01)


def test_writers_leave_checkpoints_to_the_background_thread(data_file: Path) -> None:
    with store.get_store().writer.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert pages == wal.WRITER_AUTOCHECKPOINT
    _, [sheet] = store.create_workbook(ORG, name="W", sheets=[SheetConfig(name="S")])
    running = store.checkpointer()
    assert running is not None and running.done == 0
    before = data_file.stat().st_size

    # About 6 MB of pages: far below the writers' own threshold (40 MB), so only the
    # background thread can have copied them into the database file.
    rows = [({"text": f"{i} " + "x" * 500}, None) for i in range(10_000)]
    state = None
    for k in range(1, 3):
        chunk = store.Chunk(inserts=[(sheet.id, rows[(k - 1) * 5000 : k * 5000])])
        state = store.commit_chunk(ORG, "lin", 0, state, {"k": k}, chunk)
    _wait_for(lambda: data_file.stat().st_size > before + 4_000_000)
    assert running.done >= 1
    with store.get_store().reader.connect() as conn:
        count = conn.execute(
            sa.text("SELECT count(*) FROM data_record WHERE sheet_id = :s"), {"s": sheet.id}
        ).scalar()
    assert count == 10_000


def test_a_chunk_that_writes_nothing_asks_for_no_checkpoint(data_file: Path) -> None:
    store.commit_chunk(ORG, "lin", 0, None, {"k": 1}, store.Chunk())
    running = store.checkpointer()
    assert running is not None
    time.sleep(0.1)
    assert running.done == 0


def test_a_stopped_checkpointer_ignores_kicks(data_file: Path) -> None:
    running = wal.Checkpointer(store.get_store().reader)
    running.kick()
    _wait_for(lambda: running.done == 1)
    running.stop()
    running.kick()
    time.sleep(0.1)
    assert running.done == 1
    busy, log, copied = running.checkpoint()  # still usable directly
    assert busy == 0 and log == copied
