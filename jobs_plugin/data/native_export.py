"""Native-speed CSV/TSV export with Apache Arrow (the optional ``arrow`` extra).

``csv_block`` turns a block of records (their ``values`` as JSON Lines, as the store reads
them) into the exact bytes ``formats.Writer`` writes with Python's ``csv`` module, or says
``None`` and the caller writes the block the Python way. Arrow parses the JSON in C++ and
renders each column with its compute kernels; a differential test holds the two writers to
the same bytes.

What the Python writer does, and how it is matched:

* a text is written as is, quoted (``"`` doubled) when it holds the delimiter, a quote, CR or
  LF; a missing key or a null is an empty cell; booleans are ``true``/``false``;
* an integer is written in decimal, a float as Python's ``repr``. Arrow reads a number
  column holding both kinds as floats, so an integral float cell (``500.0`` or ``500``?) and
  one Python would print with an exponent are rendered from the record's own JSON: a few
  cells a block, with orjson, as the Python writer would;
* anything else (an object or a list in a cell, a number in a text field, a NUL character,
  JSON Arrow will not read) sends the block the Python way.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import orjson

from jobs_plugin.data import arrow
from jobs_plugin.data.arrow import available
from jobs_plugin.data.models import FieldType, SheetField

__all__ = ["available", "csv_block", "lines_at", "usable"]

_FIXED_LOW, _FIXED_HIGH = 1e-4, 1e10
"""Floats in this range (and not integral) print the same in Arrow and in Python: the
shortest round-trip digits, without an exponent."""


def _arrow() -> tuple[Any, Any, Any]:
    pa, pc, _, pj = arrow.modules()
    return pa, pc, pj


def usable(fields: Sequence[SheetField]) -> bool:
    """Arrow renders sheets of two fields or more (one field alone has the ``csv`` module's
    rule for an empty row) with distinct keys."""
    keys = [f.key for f in fields]
    return len(keys) >= 2 and len(set(keys)) == len(keys) and available()


@lru_cache(maxsize=64)
def _parse_options(kinds: tuple[tuple[str, str], ...]) -> Any:
    """Texts read as texts (never as timestamps), booleans as booleans; numbers are left to
    Arrow's inference (integers, or floats when the block has any)."""
    pa, _, pj = _arrow()
    declared = [
        (key, pa.bool_() if kind == FieldType.BOOLEAN.value else pa.string())
        for key, kind in kinds
        if kind != FieldType.NUMBER.value
    ]
    return pj.ParseOptions(explicit_schema=pa.schema(declared), unexpected_field_behavior="infer")


def csv_block(
    block: bytes, count: int, fields: Sequence[SheetField], delimiter: str
) -> bytes | None:
    """The CSV lines (CRLF-ended) of the ``count`` records in ``block``, or ``None``."""
    pa, pc, _ = _arrow()
    kinds = tuple((f.key, f.type.value) for f in fields)
    table = _parse(block, kinds)
    if table is None:
        return None
    if table.num_rows != count:
        return None
    columns = []
    for key, _ in kinds:
        if key not in table.column_names:
            columns.append(pa.array([""] * count, pa.string()))
            continue
        column = table.column(key).combine_chunks()
        kind_of = column.type
        if pa.types.is_null(kind_of):
            rendered = pa.array([""] * count, pa.string())
        elif pa.types.is_string(kind_of):
            rendered = _text(column, delimiter)
            if rendered is None:
                return None
        elif pa.types.is_boolean(kind_of):
            rendered = pc.if_else(column, "true", "false")
        elif pa.types.is_int64(kind_of):
            rendered = pc.cast(column, pa.string())
        elif pa.types.is_float64(kind_of):
            rendered = _floats(column, key, block, count)
            if rendered is None:
                return None
        else:  # a struct, a list, a timestamp...
            return None
        columns.append(pc.fill_null(rendered, ""))
    joined = pc.binary_join_element_wise(*columns, delimiter)
    ended = pc.binary_join_element_wise(joined, "\r\n", "")
    return _bytes_of(ended)


_PARSE_BLOCK = 1 << 19
"""Arrow parses a block's JSON in pieces of this size (a little faster than the block whole);
a record longer than a piece makes it parse the block whole."""


def _parse(block: bytes, kinds: tuple[tuple[str, str], ...]) -> Any | None:
    """The block's records as a table, parsed on the calling thread: an export renders two
    blocks at once on two threads, and Arrow's own threads on top of them made its loop 14%
    slower on two cores (1.27-1.49 s against 1.10-1.17 s for a million rows, same process)."""
    pa, _, pj = _arrow()
    for size in (min(_PARSE_BLOCK, len(block)), len(block)):
        try:
            return pj.read_json(
                pa.BufferReader(block),
                read_options=pj.ReadOptions(use_threads=False, block_size=max(size, 1 << 10)),
                parse_options=_parse_options(kinds),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if size == len(block):
                return None
    return None


def _text(column: Any, delimiter: str) -> Any | None:
    """Texts as the csv module writes them; ``None`` when one holds a NUL character. Only the
    cells that need quotes are quoted, found by a plain search for each special character
    the column holds (a regex over the column cost four times as much)."""
    _, pc, _ = _arrow()
    data = _bytes_of(column)
    if b"\x00" in data:
        return None
    specials = [c for c in (delimiter, '"', "\r", "\n") if c.encode() in data]
    if not specials:
        return column
    needs = pc.match_substring(column, specials[0])
    for special in specials[1:]:
        needs = pc.or_(needs, pc.match_substring(column, special))
    needs = pc.fill_null(needs, False)
    picked = pc.filter(column, needs)
    if '"' in specials:
        picked = pc.replace_substring(picked, '"', '""')
    return pc.replace_with_mask(column, needs, pc.binary_join_element_wise('"', picked, '"', ""))


def _floats(column: Any, key: str, block: bytes, count: int) -> Any | None:
    """A float column as Python prints its cells: Arrow's text where the two agree, and
    Python's (from the record's JSON) for integral cells and very small or large ones."""
    pa, pc, _ = _arrow()
    size = pc.abs(column)
    odd = pc.or_(
        pc.equal(column, pc.floor(column)),
        pc.or_(pc.less(size, _FIXED_LOW), pc.greater_equal(size, _FIXED_HIGH)),
    )
    odd = pc.fill_null(odd, False)
    rendered = pc.cast(column, pa.string())
    if not pc.any(odd).as_py():
        return rendered
    where = pc.indices_nonzero(odd).to_pylist()
    cells = []
    for line in lines_at(block, where, count):
        value = orjson.loads(line).get(key)
        if type(value) not in (int, float):
            return None
        cells.append(str(value))
    return pc.replace_with_mask(rendered, odd, pa.array(cells, pa.string()))


def lines_at(block: bytes, rows: Sequence[int], count: int) -> list[bytes]:
    """Lines ``rows`` (ascending) of a block of ``count`` lines split by ``\\n``, found by
    scans in C instead of a split of the whole block (which held the GIL for about 1 ms a
    block of 10,000 records, on every block with an integral float): ``bytes.count`` up to
    where the row's line would begin at the block's mean line width, then ``find`` or
    ``rfind`` for the lines that estimate missed."""
    width = len(block) / max(count, 1)
    found: list[bytes] = []
    line, start = 0, 0  # line ``line`` begins at ``start``
    for row in rows:
        if row > line:
            guess = min(len(block), start + int((row - line) * width))
            passed = block.count(b"\n", start, guess)
            if passed:
                line += passed
                start = block.rfind(b"\n", start, guess) + 1
        while line < row:
            start = block.index(b"\n", start) + 1
            line += 1
        while line > row:
            start = block.rfind(b"\n", 0, start - 1) + 1
            line -= 1
        end = block.find(b"\n", start)
        found.append(block[start : end if end >= 0 else len(block)])
    return found


def _bytes_of(strings: Any) -> bytes:
    """The characters of a string array, end to end (its data buffer, between its offsets)."""
    if len(strings) == 0:
        return b""
    offsets, data = strings.buffers()[1], strings.buffers()[2]
    ends = memoryview(offsets).cast("i")
    start, stop = ends[strings.offset], ends[strings.offset + len(strings)]
    return bytes(memoryview(data)[start:stop]) if data is not None else b""
