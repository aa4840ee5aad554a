"""Native-speed CSV extraction with Apache Arrow (the optional ``arrow`` extra).

Arrow parses the file in C++ and, for a block whose every cell has the plain form of its
field, builds the block's records as one JSON array (``store.Encoded``), a column at a time:
the same bytes as ``Validator.validate_columns`` followed by orjson (a differential test holds
the two to it). Any other block (an empty required cell, a number with an exponent, a text
with a control character...) comes back as text rows for the Python validator.

Where Arrow would read the file differently from Python's ``csv`` module (a quote followed by
text, an odd number of quotes, a ragged row, a byte that is not UTF-8, an over-long field),
``take`` raises ``Diverged``: the caller goes on with ``formats``' reader after the rows
delivered so far (``delivered``), which reads the rest as before and names the bad line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from typing import IO, Any

import orjson

from jobs_plugin.data import arrow
from jobs_plugin.data.arrow import available
from jobs_plugin.data.formats import CsvLayout
from jobs_plugin.data.models import FieldType, SheetField
from jobs_plugin.data.schema import _BOOLEANS, _TRUE
from jobs_plugin.data.store import Encoded

pa: Any = None
pc: Any = None
pcsv: Any = None

ENCODINGS = ("utf-8", "utf-8-sig")
BLOCK_BYTES = 1 << 20
_DIGITS = 15
"""Numbers of at most this many significant digits print as their canonical decimal text."""
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"

TextRows = list[tuple[str, ...]]
Rendered = tuple[Any, bool]
"""A column's JSON text per cell (an Arrow string array) and whether it still needs quotes."""


def _load() -> None:
    global pa, pc, pcsv
    if pa is None:
        pa, pc, pcsv, _ = arrow.modules()


def usable(layout: CsvLayout | None, width: int, fields: Sequence[SheetField]) -> bool:
    """Whether a table read with ``layout`` can go through Arrow (else: ``formats`` only)."""
    return (
        available()
        and layout is not None
        and layout.encoding in ENCODINGS
        and width >= 2
        and bool(fields)
        and not any(f.has("unique") for f in fields)
    )


class Diverged(Exception):
    """Arrow cannot be trusted to read the rest of the file as ``csv`` would."""


class _Guarded:
    """The file's bytes for Arrow; raises ``Diverged`` on what the two parsers read apart.

    A quote that closes a field and is followed by text (``"a"b``: csv fails, Arrow reads
    ``ab``) shows in the bytes as a run of an odd number of quotes between two characters
    that are neither quotes, the delimiter nor line ends (an even run is escaped quotes);
    a bare ``a"b`` matches too (csv then reads the rest: right, only slower). An odd number
    of quotes in all is a field left open (csv fails, Arrow reads to the end)."""

    def __init__(self, stream: IO[bytes], delimiter: str) -> None:
        d = re.escape(delimiter.encode())
        other = b'[^"' + d + b"\\r\\n]"
        # The quote first, so the search skips ahead by it, not by a class.
        self._odd = re.compile(b'"(?<=' + other + b'")(?:"")*' + other)
        self._stream = stream
        self._tail = b""
        self._quotes = 0
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        if not data:
            if self._quotes % 2:
                raise Diverged("an odd number of quotes")
            return data
        self._quotes += data.count(b'"')
        seen = self._tail + data
        if self._odd.search(seen):
            raise Diverged("a quote followed by text")
        kept = len(seen.rstrip(b'"'))  # a run of quotes, and the byte before it, go on
        self._tail = seen[max(kept - 1, 0) :]
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


class NativeCsv:
    """The data rows of a CSV file, ``take(n)`` rows at a time, read by Arrow."""

    def __init__(
        self,
        stream: IO[bytes],
        layout: CsvLayout,
        width: int,
        fields: Sequence[SheetField],
        positions: Sequence[int | None],
    ) -> None:
        _load()
        names = [f"c{i}" for i in range(width)]
        try:
            self._reader = self._open(stream, layout, names)
        except Exception as exc:  # Diverged from the stream, or Arrow's own parse errors
            raise Diverged(str(exc)) from exc
        self._before_header = layout.header
        self._pending: list[Any] = []
        self._ended = False
        self._limit = csv.field_size_limit()
        self._plans = [
            (orjson.dumps(f.key).decode(), _renderer(f), at, f.has("required"))
            for f, at in zip(fields, positions, strict=True)
        ]
        self.delivered = 0
        """Data rows (blank ones not counted, as ``formats`` does) handed out so far."""

    @staticmethod
    def _open(stream: IO[bytes], layout: CsvLayout, names: list[str]) -> Any:
        return pcsv.open_csv(
            pa.PythonFile(_Guarded(stream, layout.delimiter), mode="r"),
            read_options=pcsv.ReadOptions(column_names=names, block_size=BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(
                delimiter=layout.delimiter, newlines_in_values=True, ignore_empty_lines=True
            ),
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=True,
            ),
        )

    # ------------------------------------------------------------------ reading

    def _batch(self) -> Any | None:
        try:
            return self._reader.read_next_batch()
        except StopIteration:
            return None
        except Exception as exc:  # Diverged from the stream, or Arrow's own parse errors
            raise Diverged(str(exc)) from exc

    def _rows(self, n: int) -> Any | None:
        """The next ``n`` rows (fewer at the end; None after it), blank ones included."""
        have = sum(b.num_rows for b in self._pending)
        while have < n and not self._ended:
            batch = self._batch()
            if batch is None:
                self._ended = True
                break
            if self._before_header:
                batch = self._drop_header(batch)
            self._check_sizes(batch)
            self._pending.append(batch)
            have += batch.num_rows
        if not have:
            return None
        table = pa.Table.from_batches(self._pending).combine_chunks()
        rest = table.slice(n)
        self._pending = rest.to_batches() if rest.num_rows else []
        return table.slice(0, n)

    def _drop_header(self, batch: Any) -> Any:
        """The batch after the header (the first row that is not blank)."""
        first = pc.index(_blank(batch), False).as_py()
        if first < 0:
            return batch.slice(batch.num_rows)
        self._before_header = False
        return batch.slice(first + 1)

    def _check_sizes(self, batch: Any) -> None:
        for column in batch.columns:
            if len(column) and pc.max(pc.binary_length(column)).as_py() > self._limit:
                raise Diverged("a field larger than the csv module's limit")

    # ------------------------------------------------------------------ blocks

    def skip(self, n: int) -> None:
        """Pass over the first ``n`` data rows (a resumed step's committed ones)."""
        while n > 0:
            table = self._rows(n)
            if table is None:
                return
            kept = table.num_rows - _count(_blank(table))
            self.delivered += kept
            n -= kept

    def take(self, n: int) -> Encoded | TextRows:
        """The next ``n`` rows (fewer at the end, none after it): encoded records when every
        cell has the plain form of its field, else the rows' text cells (blank rows left out)."""
        table = self._rows(n)
        if table is None:
            return []
        blank = _blank(table)
        if _count(blank):
            table = table.filter(pc.invert(blank))
            self.delivered += table.num_rows
            return _text_rows(table)
        self.delivered += table.num_rows
        text = self._encode(table)
        return _text_rows(table) if text is None else Encoded(table.num_rows, text)

    def _encode(self, table: Any) -> bytes | None:
        """The block's records as one JSON array, or None when a cell needs the Python
        validator (its message, or a form this module does not render)."""
        pieces: list[Any] = []
        literal = "{"
        for key, render, at, required in self._plans:
            literal += key + ":"
            if at is None:
                if required:
                    return None
                literal += "null,"
                continue
            column = table.column(at)
            empty = pc.equal(column, "")
            empties = _count(empty)
            if empties and required:
                return None
            rendered = render(column, empty if empties else None)
            if rendered is None:
                return None
            values, quoted = rendered
            if empties:
                if quoted:
                    values = pc.binary_join_element_wise('"', values, '"', "")
                values = pc.if_else(empty, "null", values)
                quoted = False
            if quoted:
                literal += '"'
            pieces += [literal, values]
            literal = '",' if quoted else ","
        pieces.append(literal[:-1] + "}")
        records = pc.binary_join_element_wise(*pieces, "")
        if isinstance(records, pa.ChunkedArray):
            records = records.combine_chunks()
        array = pa.ListArray.from_arrays(pa.array([0, len(records)], pa.int32()), records)
        joined: bytes = pc.binary_join(array, ",")[0].as_buffer().to_pybytes()
        return b"[" + joined + b"]"


# --------------------------------------------------------------------------- cells


def _count(mask: Any) -> int:
    return int(pc.sum(mask).as_py() or 0)


def _blank(table: Any) -> Any:
    """Rows whose every cell is empty (``formats`` leaves them out)."""
    mask = pc.equal(table.column(0), "")
    for column in table.columns[1:]:
        mask = pc.and_(mask, pc.equal(column, ""))
    return mask


def _text_rows(table: Any) -> TextRows:
    return list(zip(*(column.to_pylist() for column in table.columns), strict=True))


def _fill(column: Any, empty: Any | None, placeholder: str) -> Any:
    """Empty cells replaced by a plain value (their output is ``null`` anyway)."""
    return column if empty is None else pc.if_else(empty, placeholder, column)


_CONTROLS = bytes(range(32))


def _bytes(column: Any) -> bytes:
    """The UTF-8 bytes behind a text column (a slice's may reach past it: checks on them
    err on the safe side)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    return b"".join(b.to_pybytes() for c in chunks if (b := c.buffers()[2]) is not None)


def _strings(column: Any, empty: Any | None) -> Rendered | None:
    """Texts, escaped for JSON as orjson does; None when one holds a control character
    (orjson escapes them as ``\\n``, ``\\u0000``...: left to the Python path)."""
    raw = _bytes(column)
    if len(raw.translate(None, _CONTROLS)) != len(raw):
        return None
    if b"\\" in raw:
        column = pc.replace_substring(column, "\\", "\\\\")
    if b'"' in raw:
        column = pc.replace_substring(column, '"', '\\"')
    return column, True


def _numbers(column: Any, empty: Any | None) -> Rendered | None:
    """Integers below 1e15 in size, printed as Python's ``int`` prints them; else decimals."""
    column = _fill(column, empty, "0")
    if b"." in _bytes(column):
        return _decimals(column)
    plain = pc.all(pc.ascii_is_decimal(column)).as_py()
    if (
        plain
        and not _count(pc.and_(pc.starts_with(column, "0"), pc.not_equal(column, "0")))
        and not _count(pc.greater(pc.utf8_length(column), _DIGITS))
    ):
        return column, False  # already as ``int`` prints it
    try:
        whole = pc.cast(column, pa.int64())
        big = _count(pc.greater_equal(pc.abs_checked(whole), 10**15))
    except pa.ArrowInvalid:
        return _decimals(column)
    return None if big else (pc.cast(whole, pa.string()), False)


def _decimals(column: Any) -> Rendered | None:
    """Plain decimals (``-`` and digits, one ``.`` at most), below 1e15 in size. Integral
    ones print as ints (``int`` of the value, as ``to_number``); others as their text without
    trailing zeros when it has at most 15 digits and the value is at least 1e-4 in size: then
    the shortest repr orjson prints has those very digits. Anything else: None."""
    negative = pc.starts_with(column, "-")
    size = pc.if_else(negative, pc.utf8_slice_codeunits(column, 1), column)
    digits = pc.replace_substring(size, ".", "", max_replacements=1)
    if not pc.all(pc.ascii_is_decimal(digits)).as_py() or _count(pc.starts_with(size, ".")):
        return None
    value = pc.cast(column, pa.float64())
    magnitude = pc.abs(value)
    if _count(pc.greater_equal(magnitude, 1e15)):
        return None
    integral = pc.equal(value, pc.floor(value))
    fraction = pc.invert(integral)
    trimmed = pc.utf8_rtrim(pc.if_else(fraction, size, "0"), "0")
    leading_zero = pc.starts_with(trimmed, "0")
    long = pc.greater(pc.subtract(pc.utf8_length(trimmed), pc.if_else(leading_zero, 2, 1)), _DIGITS)
    odd = pc.or_(
        pc.and_(leading_zero, pc.invert(pc.starts_with(trimmed, "0."))),
        pc.or_(long, pc.less(magnitude, 1e-4)),
    )
    if _count(pc.and_(fraction, odd)):
        return None
    whole = pc.cast(pc.cast(pc.floor(value), pa.int64()), pa.string())
    decimal = pc.binary_join_element_wise(pc.if_else(negative, "-", ""), trimmed, "")
    return pc.if_else(integral, whole, decimal), False


def _booleans(column: Any, empty: Any | None) -> Rendered | None:
    words = pc.ascii_lower(pc.utf8_trim(_fill(column, empty, "true"), " "))
    if not pc.all(pc.is_in(words, pa.array(list(_BOOLEANS)))).as_py():
        return None
    return pc.if_else(pc.is_in(words, pa.array(list(_TRUE))), "true", "false"), False


def _dates(column: Any, empty: Any | None) -> Rendered | None:
    """ISO dates (``YYYY-MM-DD``, a real day of years 1 to 9999), kept as they are."""
    column = _fill(column, empty, "2000-01-01")
    if not pc.all(pc.match_substring_regex(column, _DATE)).as_py():
        return None
    if _count(pc.starts_with(column, "0000")):
        return None
    try:
        pc.cast(column, pa.date32())
    except pa.ArrowInvalid:
        return None
    return column, True


def _enum(options: Sequence[str]) -> Callable[[Any, Any | None], Rendered | None]:
    choices = pa.array(options, pa.string())

    def render(column: Any, empty: Any | None) -> Rendered | None:
        if not pc.all(pc.is_in(_fill(column, empty, options[0]), choices)).as_py():
            return None
        return _strings(column, empty)

    return render


def _no_options(column: Any, empty: Any | None) -> Rendered | None:
    return None


def _renderer(f: SheetField) -> Callable[[Any, Any | None], Rendered | None]:
    if f.type is FieldType.ENUM:
        options = [o.value for o in (f.config.options if f.config else [])]
        texts = [o for o in options if isinstance(o, str)]
        return _enum(texts) if texts else _no_options
    return {
        FieldType.STRING: _strings,
        FieldType.NUMBER: _numbers,
        FieldType.BOOLEAN: _booleans,
        FieldType.DATE: _dates,
    }[f.type]
