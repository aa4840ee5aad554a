"""The data store module on SQLite and PostgreSQL: its own migrations and version table,
tenant isolation, chunk commits guarded by their checkpoint, and undo of a step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from jobs_plugin import db
from jobs_plugin.data import store
from jobs_plugin.data.models import (
    RANGE_BITS,
    SheetConfig,
    SheetNotFound,
    record_id,
    record_seq,
    record_table,
)
from jobs_plugin.errors import ConflictError
from jobs_plugin.settings import get_settings
from tests.conftest import _drop_postgres_database, _postgres_database

ORG, OTHER = "us_org_a", "us_org_b"
R = record_table.c


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
    assert version == "0003"

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


def _plan(query: sa.Select[Any]) -> str:
    """SQLite's plan of a query with bound parameters (as the store runs it), one line."""
    with store.get_store().reader.connect() as conn:
        compiled = query.compile(conn)
        params = tuple(compiled.params[k] for k in compiled.positiontup or ())
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params).all()
    return " | ".join(str(r[-1]) for r in rows)


def test_a_sheets_records_are_one_key_range(data_url: str) -> None:
    """Each sheet numbers its records in a range of its own: two sheets written in turns keep
    contiguous numbers (so a step's checkpoint keeps one range per sheet), each read finds its
    own sheet's records only, and on SQLite a block of an export is a seek on the primary key,
    from the last block's end (not from the range's start)."""
    config = SheetConfig(name="S", fields=[{"key": "n", "type": "number"}])
    _, [a, b] = store.create_workbook(
        ORG, name="W", sheets=[config, config.model_copy(update={"name": "T", "slug": "t"})]
    )
    assert a.number is not None and b.number == a.number + 1
    state: dict[str, Any] | None = None
    for k in range(3):
        chunk = store.Chunk(
            inserts=[(a.id, [({"n": k}, None)] * 2), (b.id, [({"n": 10 + k}, None)])]
        )
        state = store.commit_chunk(ORG, "lin", 0, state, {**(state or {}), "k": k}, chunk)
    assert state is not None
    (_, a_low, a_high), (_, b_low, b_high) = state["ranges"]
    assert (a_high - a_low, b_high - b_low) == (5, 2)
    assert a_low == (a.number << RANGE_BITS) + 1 and b_low == (b.number << RANGE_BITS) + 1
    assert [v["n"] for v in _values(a.id)] == [0, 0, 1, 1, 2, 2]
    assert [v["n"] for v in _values(b.id)] == [10, 11, 12]
    assert store.record_counts(ORG, b.id).total == 3
    if not data_url.startswith("sqlite"):
        return
    sheet = store.get_sheet(ORG, a.id)
    plan = _plan(
        sa.select(R.seq).where(*store._conditions(sheet, store.RecordQuery(), above=a_low + 2))
    )
    assert "USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)" in plan, plan
    where = store._conditions(sheet, store.RecordQuery(), above=a_low + 2)
    lower = [w for w in where if str(w).startswith("data_record.seq >")]
    assert len(lower) == 1 and lower[0].compile().params == {"seq_1": a_low + 2}


def _values(sheet_id: str) -> list[dict[str, Any]]:
    _, rows, _ = store.query_records(ORG, sheet_id, store.RecordQuery())
    return [r._mapping["values"] for r in rows]


def test_a_sheet_that_used_its_range_refuses_more_records(data_url: str) -> None:
    config = SheetConfig(name="S", fields=[{"key": "n", "type": "number"}])
    _, [sheet] = store.create_workbook(ORG, name="W", sheets=[config])
    assert sheet.number is not None
    last = ((sheet.number + 1) << RANGE_BITS) - 1
    with store.get_store().writer.begin() as conn:
        conn.execute(
            sa.text("UPDATE data_counter SET value = :v WHERE name = :s"),
            {"v": last - 1, "s": sheet.id},
        )
    assert store.insert_records(ORG, sheet.id, [({"n": 1}, None)]) == [last]
    with pytest.raises(ConflictError, match=f"sheet {sheet.id} has used all its"):
        store.insert_records(ORG, sheet.id, [({"n": 2}, None)])
    assert [v["n"] for v in _values(sheet.id)] == [1]


def _migrate_to(revision: str) -> None:
    built = db._build(store.data_url())
    store._migrate(built, revision)
    built.reader.dispose()
    built.writer.dispose()


def test_sheets_made_before_ranges_keep_their_records_and_ids(data_url: str) -> None:
    """A store written by revision 0002 (one shared row counter, an index on the sheet): after
    the upgrade its sheets find their records, under the same ids, both ways and by block;
    new records follow the old counter; a new sheet gets a range; deleting works."""
    _migrate_to("0002")
    engine = sa.create_engine(store.data_url())
    config = {"name": "Old", "slug": "old", "fields": [{"key": "n", "type": "number"}]}
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO data_workbook (id, organization_id, name, created_at, updated_at) "
                "VALUES ('us_wb_old', :org, 'Old', :now, :now)"
            ),
            {"org": ORG, "now": "2026-12-01 00:00:00"},
        )
        for sheet_id in ("us_sh_old", "us_sh_old2"):
            conn.execute(
                sa.text(
                    "INSERT INTO data_sheet (id, organization_id, workbook_id, name, slug, "
                    "config, position, created_at, updated_at) VALUES (:id, :org, 'us_wb_old', "
                    "'Old', :id, :config, 0, :now, :now)"
                ),
                {
                    "id": sheet_id,
                    "org": ORG,
                    "config": orjson.dumps(config).decode(),
                    "now": "2026-12-01 00:00:00",
                },
            )
        for seq in range(1, 21):  # two sheets' records, interleaved
            conn.execute(
                sa.text(
                    'INSERT INTO data_record (seq, sheet_id, valid, "values") '
                    "VALUES (:seq, :sheet, true, :values)"
                ),
                {
                    "seq": seq,
                    "sheet": "us_sh_old" if seq % 2 else "us_sh_old2",
                    "values": orjson.dumps({"n": seq}).decode(),
                },
            )
        conn.execute(sa.text("UPDATE data_counter SET value = 20 WHERE name = 'record'"))
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('data_record', 'seq'), 20)"))
    engine.dispose()

    old = store.get_sheet(ORG, "us_sh_old")  # upgrades the store
    assert old.number is None
    odd = list(range(1, 21, 2))
    _, rows, total = store.query_records(ORG, old.id, store.RecordQuery())
    assert total == 10 and [r._mapping["seq"] for r in rows] == odd
    assert [record_id(r._mapping["seq"]) for r in rows] == [record_id(s) for s in odd]
    for direction, expected in (("asc", odd), ("desc", odd[::-1])):
        blocks = store.stream_json(
            ORG, old.id, store.RecordQuery(sort_direction=direction), batch=3
        )
        assert [orjson.loads(x)["n"] for _, b in blocks for x in b.split(b"\n")] == expected
    assert [int(r.seq) for r in store.records_after(ORG, old.id, 15, 10)] == [17, 19]
    added = store.insert_records(ORG, old.id, [({"n": 99}, None)])
    assert added[0] > 20 and added[0] < 1 << RANGE_BITS
    assert store.count_records(ORG, old.id) == 11 and store.count_records(ORG, "us_sh_old2") == 10
    assert store.delete_records(ORG, old.id, [1, 2]) == 1  # record 2 is the other sheet's
    _, [new] = store.create_workbook(ORG, name="New", sheets=[SheetConfig(**config)])
    assert new.number == 1
    assert store.insert_records(ORG, new.id, [({"n": 1}, None)]) == [(1 << RANGE_BITS) + 1]
    if data_url.startswith("sqlite"):
        plan = _plan(sa.select(R.seq).where(*store._conditions(old, store.RecordQuery(), below=9)))
        assert "ix_data_record_legacy_sheet_seq (sheet_id=? AND seq<?)" in plan, plan
    store.delete_workbook(ORG, "us_wb_old")
    assert store.count_records(ORG, new.id) == 1
    with store.get_store().reader.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM data_record")).scalar() == 1
