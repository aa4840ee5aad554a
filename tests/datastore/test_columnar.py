"""The bulk paths give the results of the cell-by-cell ones: column-at-a-time validation of
CSV rows, CSV blocks and the lines they name, and the CSV writer's column rendering."""

from __future__ import annotations

import csv
import io
import random
from typing import Any

import orjson
import pytest

from jobs_plugin.data import formats, schema
from jobs_plugin.data.models import SheetConfig

TRICKY = [
    "", " ", "0", "-0", "+5", "007", " 42 ", "1_000", "1e3", "1E-2", "nan", "inf", "-inf",
    "Infinity", "12.50", "3.0", "0.1", "9007199254740993", "99999999999999999999999", "1.5e308",
    "1e400", "abc", "true", " TRUE ", "yes", "Y", "t", "1", "no", "F", "maybe", "2020-01-01",
    "2020-02-30", "2020-W01-1", "01/02/2020", "2020/01/02", "31.12.2020", "2020-01-01T10:00:00",
    "20200101", "é", 'quote"s', "a,b", "\n", "red", "Red", "green",
]  # fmt: skip
PLAIN = {
    "string": ["x", "name 1", "é", 'say "hi"'],
    "number": ["1", "-20", "3.25", "1e3", "0.5", "12.0"],
    "boolean": ["true", "False", " yes ", "N", "t", "0"],
    "date": ["2020-01-01", "1999-12-31", "2024-02-29"],
    "enum": ["red", "green"],
}
CONFIG = SheetConfig(
    name="S",
    fields=[
        {"key": "s", "type": "string"},
        {"key": "n", "type": "number", "constraints": [{"type": "required"}]},
        {"key": "b", "type": "boolean"},
        {"key": "d", "type": "date", "constraints": [{"type": "required"}]},
        {
            "key": "e",
            "type": "enum",
            "config": {"options": [{"value": "red"}, {"value": "green"}]},
        },
        {"key": "absent", "type": "number", "constraints": [{"type": "required"}]},
    ],
)
KINDS = ["string", "number", "boolean", "date", "enum"]


def _reference(rows: list[list[str]], positions: list[int | None]) -> list[Any]:
    validator = schema.Validator(CONFIG)
    keys = [f.key for f in CONFIG.fields]
    out = []
    for row in rows:
        cells = {k: row[at] for k, at in zip(keys, positions, strict=True) if at is not None}
        out.append(validator.validate(cells))
    return out


def _same(got: list[Any], want: list[Any]) -> None:
    # orjson tells 5 from 5.0 and keeps key order: the stored text must be the same.
    assert [orjson.dumps(r) for r in got] == [orjson.dumps(r) for r in want]


@pytest.mark.parametrize("seed", range(40))
def test_columns_validate_as_cells_do(seed: int) -> None:
    rnd = random.Random(seed)
    n = rnd.choice([1, 2, 7, 50])
    columns = []
    for kind in KINDS:
        # Half the columns plain (the C-level path), half with tricky cells mixed in.
        pool = PLAIN[kind] if rnd.random() < 0.5 else PLAIN[kind] + TRICKY
        columns.append([rnd.choice(pool) for _ in range(n)])
    rows = [list(r) for r in zip(*columns, strict=True)]
    positions: list[int | None] = [0, 1, 2, 3, 4, None]
    got = schema.Validator(CONFIG).validate_columns(rows, positions)
    _same(got, _reference(rows, positions))


def test_each_tricky_value_alone_in_every_column() -> None:
    rows = [[value] * 5 for value in TRICKY]
    positions: list[int | None] = [0, 1, 2, 3, 4, None]
    validator = schema.Validator(CONFIG)
    for row in rows:  # one-row chunks: each value decides its column's path alone
        _same(validator.validate_columns([row], positions), _reference([row], positions))


def test_plain_columns_take_the_column_path() -> None:
    assert schema._fast_numbers(["1", "2"]) == [1, 2]
    assert orjson.dumps(schema._fast_numbers(["1.5", "2.0", "1e3"])) == b"[1.5,2,1000]"
    assert schema._fast_numbers(["1", "nan"]) is None
    assert schema._fast_numbers(["1_000"]) is None
    assert schema._fast_numbers(["9007199254740993"]) is None
    assert schema._fast_booleans([" Yes", "f"]) == [True, False]
    assert schema._fast_booleans(["maybe"]) is None
    assert schema._fast_dates(["2020-01-01"]) == ["2020-01-01"]
    assert schema._fast_dates(["01/02/2020"]) is None


def test_numbers_beyond_double_precision_are_floats_not_errors() -> None:
    assert schema.to_number("9007199254740993") == pytest.approx(9.007199254740992e15)
    assert isinstance(schema.to_number("99999999999999999999999"), float)
    assert isinstance(schema.to_number(10**30), float)
    with pytest.raises(schema.CastError):
        schema.to_number("1" + "0" * 400)
    with pytest.raises(schema.CastError):
        schema.to_number(10**400)


def _csv_table(text: str) -> formats.Table:
    data = text.encode()
    return formats.read_tables(io.BytesIO(data), "csv", len(data))[0]


def _reference_lines(text: str) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    next(reader)
    out = []
    for row in reader:
        if not any(row) or (len(row) == 1 and not row[0].strip()):
            continue
        out.append((reader.line_num, row))
    return out


def test_csv_blocks_name_the_lines_of_blank_ragged_and_multiline_rows() -> None:
    lines = ["a,b,c"]
    for i in range(1, 1300):  # past the sample, so blocks come from the reader itself
        if i % 97 == 0:
            lines.append("")
        if i % 89 == 0:
            lines.append(f"{i},ragged")
        elif i % 83 == 0:
            lines.append(f'{i},"two\r\nlines","and\nthree\rmore"')
        elif i % 79 == 0:
            lines.append(f"{i},x,y,extra")
        else:
            lines.append(f"{i},x,y")
    text = "\r\n".join(lines) + "\r\n"
    table = _csv_table(text)
    got: list[tuple[int, list[str]]] = []
    uniform = 0
    while block := table.take(37):
        if not block.cells:
            break
        uniform += block.uniform
        for i, cells in enumerate(block.cells):
            assert isinstance(cells, list)
            got.append((int(block.where(i).removeprefix("line ")), cells))
    assert got == _reference_lines(text)
    assert uniform > 0  # clean blocks skip the per-row path


def test_csv_block_stops_at_the_line_of_malformed_csv() -> None:
    text = "a,b\n" + "".join(f"{i},x\n" for i in range(1, 1200)) + '1200,"open\n1201,x\n'
    table = _csv_table(text + 'bad"quote,1\n')
    with pytest.raises(formats.DataError) as caught:
        while table.take(500).cells:
            pass
    assert caught.value.where.startswith("line ")


def _written(rows: Any) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def test_csv_writer_columns_render_as_cells_do() -> None:
    keys = ["s", "n", "b", "o"]
    records: list[dict[str, Any]] = [
        {"s": "x, y", "n": 1.5, "b": True, "o": {"k": [1]}},
        {"s": None, "n": 7, "b": False, "o": None},
        {"s": 'q"', "n": None, "b": None, "o": "plain"},
        {"s": "a", "n": 0.1, "b": True, "o": 10**15},
    ]
    for batch in (records, [*records, {"s": "no other keys"}], records[3:]):
        want = _written([[formats.csv_cell(r.get(k)) for k in keys] for r in batch])
        assert _written(formats.csv_rows(batch, keys)) == want
    assert "true" in _written(formats.csv_rows(records, keys))
