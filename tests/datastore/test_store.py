"""The data store module on SQLite and PostgreSQL: its own migrations and version table,
tenant isolation, chunk commits guarded by their checkpoint, and undo of a step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from jobs_plugin.data import store
from jobs_plugin.data.models import SheetConfig, SheetNotFound, record_id, record_seq
from jobs_plugin.settings import get_settings
from tests.conftest import _drop_postgres_database, _postgres_database

ORG, OTHER = "us_org_a", "us_org_b"


@pytest.fixture(params=["sqlite", "postgresql"])
def data_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'data.db'}" if request.param == "sqlite" else _postgres_database()
    monkeypatch.setenv("PREFECT_JOBS_DATA_URL", url)
    monkeypatch.setenv("PREFECT_JOBS_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield url
    store.dispose_all()
    if request.param == "postgresql":
        _drop_postgres_database(url)


def test_store_round_trip(data_url: str) -> None:
    config = SheetConfig(name="S", fields=[{"key": "n", "type": "number"}, {"key": "w"}])
    workbook, [sheet] = store.create_workbook(ORG, name="W", sheets=[config])
    with store.get_store().reader.connect() as conn:
        version = conn.exec_driver_sql(
            "SELECT version_num FROM prefect_jobs_data_alembic_version"
        ).scalar()
    assert version == "0002"

    rows = [
        ({"n": i, "w": f"word {i}"}, None if i % 3 else {"n": [{"message": "x"}]})
        for i in range(10)
    ]
    state = store.commit_chunk(
        ORG, "lin", 0, None, {"k": 1}, store.Chunk(inserts=[(sheet.id, rows)])
    )
    assert state["ranges"][0][0] == sheet.id
    with pytest.raises(store.CheckpointConflict):  # a stale writer of the same step
        store.commit_chunk(ORG, "lin", 0, None, {"k": 1}, store.Chunk(inserts=[(sheet.id, rows)]))
    assert store.count_records(ORG, sheet.id) == 10

    query = store.RecordQuery(filter="error", sort_field="n", sort_direction="desc")
    _, found, total = store.query_records(ORG, sheet.id, query)
    assert total == 4 and [r._mapping["values"]["n"] for r in found] == [9, 6, 3, 0]
    _, found, _ = store.query_records(
        ORG, sheet.id, store.RecordQuery(search_value="WORD 7", search_field="w")
    )
    assert [r._mapping["values"]["n"] for r in found] == [7]
    _, found, _ = store.query_records(ORG, sheet.id, store.RecordQuery(filter_field="n"))
    assert len(found) == 4
    seq = int(found[0].seq)
    assert record_seq(record_id(seq)) == seq
    assert store.record_counts(ORG, sheet.id).model_dump() == {"total": 10, "valid": 6, "error": 4}

    with pytest.raises(SheetNotFound):
        store.get_sheet(OTHER, sheet.id)
    with pytest.raises(SheetNotFound):
        store.insert_records(OTHER, sheet.id, rows)

    store.commit_chunk(
        ORG, "lin", 0, state, {**state, "k": 2}, store.Chunk(inserts=[(sheet.id, rows)])
    )
    store.insert_records(ORG, sheet.id, rows[:1])  # not the step's: survives the undo
    store.undo_step(ORG, "lin", 0, drop_workbook=False)
    assert store.count_records(ORG, sheet.id) == 1
    assert store.get_checkpoint("lin", 0) is None
    store.delete_workbook(ORG, workbook.id)
    with store.get_store().reader.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM data_record")).scalar() == 0


def test_record_numbers_are_never_given_twice(data_url: str) -> None:
    config = SheetConfig(name="S", fields=[{"key": "n", "type": "number"}])
    _, [sheet] = store.create_workbook(ORG, name="W", sheets=[config])
    first = store.insert_records(ORG, sheet.id, [({"n": i}, None) for i in range(3)])
    assert first == [first[0], first[0] + 1, first[0] + 2]
    store.delete_records(ORG, sheet.id, first[1:])  # the newest ones
    state = store.commit_chunk(
        ORG, "lin", 0, None, {}, store.Chunk(inserts=[(sheet.id, [({"n": 9}, None)])])
    )
    [[_, low, high]] = state["ranges"]
    again = store.insert_records(ORG, sheet.id, [({"n": 10}, {"n": [{"message": "x"}]})])
    assert low == high and low > first[2] and again[0] > high
    _, rows, _ = store.query_records(ORG, sheet.id, store.RecordQuery(filter="error"))
    assert [r._mapping["seq"] for r in rows] == again


def test_a_steps_contiguous_chunks_keep_one_range(data_url: str) -> None:
    """Chunks that follow each other extend the checkpoint's range; a row written by someone
    else in between starts a new one, and the undo takes back the step's rows only."""
    config = SheetConfig(name="S", fields=[{"key": "n", "type": "number"}])
    _, [sheet] = store.create_workbook(ORG, name="W", sheets=[config])
    state: dict[str, Any] | None = None
    for k in range(3):
        chunk = store.Chunk(inserts=[(sheet.id, [({"n": 2 * k}, None), ({"n": 2 * k + 1}, None)])])
        state = store.commit_chunk(ORG, "lin", 0, state, {**(state or {}), "k": k}, chunk)
    assert state is not None
    [[_, low, high]] = state["ranges"]
    assert high - low == 5
    other = store.insert_records(ORG, sheet.id, [({"n": 100}, None)])
    chunk = store.Chunk(inserts=[(sheet.id, [({"n": 6}, None)])])
    state = store.commit_chunk(ORG, "lin", 0, state, {**state, "k": 3}, chunk)
    assert [r[1:] for r in state["ranges"]] == [[low, high], [other[0] + 1, other[0] + 1]]
    store.undo_step(ORG, "lin", 0, drop_workbook=False)
    _, rows, _ = store.query_records(ORG, sheet.id, store.RecordQuery())
    assert [r._mapping["values"] for r in rows] == [{"n": 100}]


def test_encoded_rows_are_stored_as_given(data_url: str) -> None:
    """A chunk encoded ahead (the native CSV reader's) lands as the same records, valid, in
    order, with numbers after the highest ever given: on both databases."""
    config = SheetConfig(name="S", fields=[{"key": "n", "type": "number"}, {"key": "w"}])
    _, [sheet] = store.create_workbook(ORG, name="W", sheets=[config])
    before = store.insert_records(ORG, sheet.id, [({"n": 0, "w": "a"}, None)])
    values = [{"n": i, "w": f'é {i} "q" \\'} for i in range(1, 6)]
    text = orjson.dumps(values)
    state = store.commit_chunk(
        ORG, "lin", 0, None, {}, store.Chunk(inserts=[(sheet.id, store.Encoded(5, text))])
    )
    [[_, low, high]] = state["ranges"]
    assert (low, high) == (before[0] + 1, before[0] + 5)
    _, rows, _ = store.query_records(ORG, sheet.id, store.RecordQuery())
    got = [(r._mapping["seq"], r._mapping["values"], r._mapping["valid"]) for r in rows]
    assert got[1:] == [(low + i, v, True) for i, v in enumerate(values)]


def test_stream_json_reads_documents_in_blocks(data_url: str) -> None:
    """An export's read: the matching records' values as JSON Lines, in blocks of the size
    asked, in the query's order, text with quotes, backslashes, line breaks and accents intact."""
    config = SheetConfig(name="S", fields=[{"key": "n", "type": "number"}, {"key": "w"}])
    _, [sheet] = store.create_workbook(ORG, name="W", sheets=[config])
    values = [{"n": i, "w": f'é {i} "q" \\ \n'} for i in range(7)]
    store.insert_records(ORG, sheet.id, [(v, None if v["n"] != 3 else {"n": []}) for v in values])
    blocks = list(store.stream_json(ORG, sheet.id, store.RecordQuery(), batch=3))
    assert [count for count, _ in blocks] == [3, 3, 1]
    assert [orjson.loads(line) for _, b in blocks for line in b.split(b"\n")] == values
    query = store.RecordQuery(filter="valid", sort_field="n", sort_direction="desc")
    [(count, block)] = store.stream_json(ORG, sheet.id, query, batch=10)
    assert count == 6 and [orjson.loads(x)["n"] for x in block.split(b"\n")] == [6, 5, 4, 2, 1, 0]
    assert list(store.stream_json(ORG, sheet.id, store.RecordQuery(filter="none"))) == []


def test_stream_json_keeps_row_order_across_blocks(data_url: str) -> None:
    """Blocks of an unsorted read follow the rows, both ways, past deleted rows, with a last
    block that is full or short; and the read is one snapshot: records added while it runs
    are not in it."""
    config = SheetConfig(name="S", fields=[{"key": "n", "type": "number"}])
    _, [sheet] = store.create_workbook(ORG, name="W", sheets=[config])
    store.insert_records(ORG, sheet.id, [({"n": i}, None) for i in range(2_400)])
    gone = [
        seq
        for i, seq in enumerate(store.matching_seqs(ORG, sheet.id, store.RecordQuery(), 3_000))
        if i % 7 == 3
    ]
    store.delete_records(ORG, sheet.id, gone)
    kept = [i for i in range(2_400) if i % 7 != 3]

    def read(query: store.RecordQuery, batch: int) -> tuple[list[int], list[int]]:
        blocks = list(store.stream_json(ORG, sheet.id, query, batch=batch))
        numbers = [orjson.loads(line)["n"] for _, b in blocks for line in b.split(b"\n")]
        return [count for count, _ in blocks], numbers

    counts, numbers = read(store.RecordQuery(), 500)
    assert numbers == kept and counts == [500] * 4 + [len(kept) - 2_000]
    counts, numbers = read(store.RecordQuery(sort_direction="desc"), 700)
    assert numbers == kept[::-1] and counts == [700, 700, len(kept) - 1_400]
    counts, numbers = read(store.RecordQuery(filter="valid"), len(kept))
    assert numbers == kept and counts == [len(kept)]
    blocks = store.stream_json(ORG, sheet.id, store.RecordQuery(), batch=1_000)
    first, _ = next(blocks)
    store.insert_records(ORG, sheet.id, [({"n": -1}, None)])
    assert first + sum(count for count, _ in blocks) == len(kept)
