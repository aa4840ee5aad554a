"""The native (Arrow) CSV writer gives the Python writer's bytes, on plain blocks and awkward
ones (it sends what it cannot render the Python way); and it does engage on plain data."""

from __future__ import annotations

import io
import json
import random
import string
from typing import Any

import orjson
import pytest

from jobs_plugin.data import formats, native_export
from jobs_plugin.data.models import SheetConfig, SheetField

pytestmark = pytest.mark.skipif(
    not native_export.available(), reason="pyarrow is not installed (the `arrow` extra)"
)
FIELDS = SheetConfig(
    name="S",
    fields=[
        {"key": "s", "type": "string"},
        {"key": "n", "type": "number"},
        {"key": "b", "type": "boolean"},
        {"key": "d", "type": "date"},
        {"key": "e", "type": "enum", "config": {"options": [{"value": "x"}, {"value": "y"}]}},
    ],
).fields
ALPHABET = string.ascii_letters + string.digits + ' ,;"\t\r\n\\/é€🙂\x01' + "'"
FLOATS = [
    0.0, -0.0, 0.5, 500.0, 1e-4, 9.9e-5, 1e-5, 1e10 - 0.5, 1e10 + 0.5, 1e15 + 0.5, 1e16,
    1e22, 0.1 + 0.2, 5e-324, 1.7976931348623157e308, -123.456, 2.0**53, 2.0**53 + 2, 1 / 3,
]  # fmt: skip
INTS = [0, -1, 7, 2**53 + 1, -(2**63), 2**63 - 1, 10**15]


def _text(rnd: random.Random) -> str:
    return "".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(0, 8)))


def _number(rnd: random.Random) -> int | float:
    pick = rnd.random()
    if pick < 0.3:
        return rnd.choice(INTS + FLOATS)
    if pick < 0.6:
        return rnd.randint(-(10**6), 10**6)
    return round(rnd.uniform(-1, 1) * 10 ** rnd.randint(-8, 18), rnd.randint(0, 6))


def _record(rnd: random.Random, plain: bool) -> dict[str, Any]:
    values = {
        "s": _text(rnd),
        "n": _number(rnd),
        "b": rnd.choice([True, False]),
        "d": f"20{rnd.randint(10, 29)}-0{rnd.randint(1, 9)}-1{rnd.randint(0, 9)}",
        "e": rnd.choice(["x", "y", "z"]),
    }
    for key in list(values):
        if rnd.random() < 0.08:
            values[key] = None
        elif rnd.random() < 0.05:
            del values[key]
    if not plain and rnd.random() < 0.05:  # what only the Python writer renders
        key = rnd.choice(list(FIELDS_BY_KEY))
        values[key] = rnd.choice([{"a": [1, "é"]}, [1, 2], "text", 3, True, "a\x00b"])
    return values


FIELDS_BY_KEY = {f.key: f for f in FIELDS}


def _python(records: list[dict[str, Any]], fields: list[SheetField], fmt: str) -> bytes:
    out = io.BytesIO()
    writer = formats.Writer(out, [], fmt, ["S"])
    writer.start_sheet("S", fields)
    writer.write(records)
    writer.close()
    return out.getvalue()


def _native(block: bytes, count: int, fields: list[SheetField], fmt: str) -> bytes:
    out = io.BytesIO()
    writer = formats.Writer(out, [], fmt, ["S"], native=True)
    writer.start_sheet("S", fields)
    writer.write_lines(block, count)
    writer.close()
    return out.getvalue()


def _lines(records: list[dict[str, Any]], spaced: bool = False) -> bytes:
    """JSON Lines as SQLite (orjson's compact text) or PostgreSQL (``jsonb``'s spaced text)
    hand them over."""
    if spaced:
        return "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode()
    return b"\n".join(orjson.dumps(r) for r in records)


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
@pytest.mark.parametrize("seed", range(12))
def test_random_blocks_are_written_as_the_python_writer_does(seed: int, fmt: str) -> None:
    rnd = random.Random(seed)
    plain = seed % 2 == 0
    records = [_record(rnd, plain) for _ in range(rnd.choice([1, 2, 50, 400]))]
    fields = list(FIELDS)
    rnd.shuffle(fields)
    expected = _python(records, fields, fmt)
    assert _native(_lines(records), len(records), fields, fmt) == expected
    assert _native(_lines(records, spaced=True), len(records), fields, fmt) == expected
    delimiter = "\t" if fmt == "tsv" else ","
    rendered = native_export.csv_block(_lines(records), len(records), fields, delimiter)
    if plain:  # Arrow did render it (not the Python writer behind its back)
        assert rendered is not None and expected.endswith(rendered)


@pytest.mark.parametrize(
    "cells",
    [
        {"n": [1, 2.5, 3]},  # integers and floats in one column
        {"n": FLOATS},
        {"n": INTS},
        {"n": [500.0, 500, -0.0, 0, 1e16, 10**16]},
        {"s": ["", '"', '""', ",", "a,b", "\r", "\n", "\r\n", " x ", "\t", "\\", ";"]},
        {"s": ["2020-01-01", "2020-01-01T10:00:00", "true", "12", "null"]},
        {"d": ["2020-01-01", "2020-01-01T10:00:00Z", None]},
        {"b": [True, False, None]},
        {"s": [None, None], "n": [None, None]},
    ],
)
def test_awkward_columns_are_written_as_the_python_writer_does(cells: dict[str, list[Any]]) -> None:
    size = max(len(v) for v in cells.values())
    records = [{k: v[i % len(v)] for k, v in cells.items()} for i in range(size)]
    expected = _python(records, list(FIELDS), "csv")
    assert _native(_lines(records), size, list(FIELDS), "csv") == expected
    assert native_export.csv_block(_lines(records), size, list(FIELDS), ",") is not None


@pytest.mark.parametrize(
    "cell",
    [
        {"s": 5},  # a number in a text field
        {"b": "yes"},  # a text in a boolean field
        {"n": "many"},
        {"s": {"a": 1}},
        {"e": ["x"]},
        {"s": "nul \x00 inside"},
    ],
)
def test_what_arrow_cannot_render_goes_the_python_way(cell: dict[str, Any]) -> None:
    records = [{"s": "a", "n": 1, "b": True, "d": "2020-01-01", "e": "x"}, cell]
    assert native_export.csv_block(_lines(records), 2, list(FIELDS), ",") is None
    assert _native(_lines(records), 2, list(FIELDS), "csv") == _python(records, list(FIELDS), "csv")


def test_a_sheet_of_one_field_is_left_to_the_python_writer() -> None:
    assert not native_export.usable(FIELDS[:1])
    records: list[dict[str, Any]] = [{"s": ""}, {"s": "x"}]
    assert _native(_lines(records), 2, FIELDS[:1], "csv") == b's\r\n""\r\nx\r\n'


def test_a_block_parsed_in_pieces_is_written_as_the_python_writer_does() -> None:
    """A block larger than Arrow's parse piece: numbers that are integers in the first
    pieces and floats in a later one, and a record longer than a piece."""
    rnd = random.Random(99)
    records = [_record(rnd, plain=True) for _ in range(12_000)]
    for i, r in enumerate(records):
        r["n"] = i if i < 11_000 else i + 0.25
    records[5_000]["s"] = "long, " * 120_000
    block = _lines(records)
    assert len(block) > 2 * native_export._PARSE_BLOCK
    expected = _python(records, list(FIELDS), "csv")
    assert _native(block, len(records), list(FIELDS), "csv") == expected
    assert native_export.csv_block(block, len(records), list(FIELDS), ",") is not None


@pytest.mark.parametrize("seed", range(8))
def test_lines_at_finds_the_lines_a_split_would(seed: int) -> None:
    """Lines of uneven widths (empty, short, one very long), any ascending choice of rows."""
    rnd = random.Random(seed)
    widths = [0, 1, 3, 40, 200, 5_000]
    chosen = rnd.choices(widths, [5, 20, 20, 30, 20, 1], k=rnd.randint(1, 600))
    lines = [  # numbered, so a line found at the wrong row shows
        b"" if width == 0 else b"%d:" % i + b"x" * width for i, width in enumerate(chosen)
    ]
    block = b"\n".join(lines)
    for _ in range(20):
        rows = sorted(rnd.sample(range(len(lines)), rnd.randint(1, min(len(lines), 30))))
        assert native_export.lines_at(block, rows, len(lines)) == [lines[r] for r in rows]
    assert native_export.lines_at(block, [], len(lines)) == []
    last = len(lines) - 1
    assert native_export.lines_at(block, [0, last], len(lines)) == [lines[0], lines[last]]
