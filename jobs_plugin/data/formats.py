"""Streaming readers and writers of CSV/TSV, JSON, JSON Lines and XLSX.

Readers turn a binary stream into ``Table``s (one per CSV/JSON file, one per XLSX worksheet):
a header, a small sample (for type inference) and ``take(n)``, the next ``n`` data rows as a
``Block`` that knows the line (or item) each row came from. Nothing reads a whole file into
memory. A problem that makes a file unreadable is a ``DataError`` naming the line and the
reason.

CSV blocks are read by the ``csv`` module straight into a list (no Python code per row): the
line of a row is only worked out (from the block's last line and the line breaks inside its
cells) when a block has blank or ragged rows, the only ones whose line a record names.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from operator import itemgetter
from typing import IO, Any, cast

import orjson

from jobs_plugin.data import native_export
from jobs_plugin.data.models import SheetField
from jobs_plugin.data.schema import CastError, keys_for, to_number

SAMPLE_BYTES = 1 << 16
SAMPLE_ROWS = 1000
DELIMITERS = (",", ";", "\t", "|")
MIMETYPES = {
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "json": "application/json",
    "jsonl": "application/jsonl",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
Cells = list[Any] | dict[str, Any]


class DataError(ValueError):
    """A file that cannot be read: ``where`` (``line 7``, ``item 3``, ``sheet 'X' row 4``)
    and ``why``."""

    def __init__(self, where: str, why: str) -> None:
        self.where = where
        self.why = why
        super().__init__(f"{where}: {why}")


@dataclass
class Block:
    """Consecutive data rows of a table. ``where(i)`` names the origin of ``cells[i]``;
    ``uniform``: every row is a list of text cells, as many as the table has columns."""

    cells: Sequence[Cells]
    where: Callable[[int], str]
    uniform: bool = False


@dataclass(frozen=True)
class CsvLayout:
    """How a CSV table was read: its delimiter, its text encoding, whether a header row
    comes first (a native reader reads the same file the same way)."""

    delimiter: str
    encoding: str
    header: bool


@dataclass
class Table:
    """One table of a file. ``columns``: ``(key, label)`` per column (positional rows) or per
    object key (JSON rows, ``keyed=True``); ``take(n)`` returns the next ``n`` data rows (fewer
    at the end, none after it), the sample's included."""

    name: str
    columns: list[tuple[str, str]]
    sample: list[Cells]
    take: Callable[[int], Block]
    estimated_rows: int | None = None
    keyed: bool = False
    source_keys: list[str] = field(default_factory=list)
    layout: CsvLayout | None = None


def _taker(rows: Iterator[tuple[str, Cells]]) -> Callable[[int], Block]:
    """``take`` over an iterator of ``(where, cells)``."""

    def take(n: int) -> Block:
        items = list(itertools.islice(rows, n))
        wheres = [where for where, _ in items]
        return Block([cells for _, cells in items], wheres.__getitem__)

    return take


def extension_of(name: str) -> str:
    """The lower-case text after the last dot ("" when none, or longer than 20 characters:
    not an extension, and more than the catalog keeps)."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return ext if len(ext) <= 20 else ""


def mimetype_of(name: str) -> str:
    return MIMETYPES.get(extension_of(name), "application/octet-stream")


def read_tables(
    stream: IO[bytes], ext: str, size: int, options: dict[str, Any] | None = None
) -> list[Table]:
    """The tables of a file, by extension: csv/tsv/txt, json, jsonl/ndjson, xlsx."""
    options = options or {}
    ext = ext.lower()
    if ext == "xlsx":
        return _xlsx_tables(stream, options)
    if ext == "json":
        return [_json_table(stream, size, options, lines=False)]
    if ext in ("jsonl", "ndjson"):
        return [_json_table(stream, size, options, lines=True)]
    return [_csv_table(stream, ext, size, options)]


# --------------------------------------------------------------------------- encodings


def detect_encoding(sample: bytes, complete: bool) -> str:
    """``utf-8-sig`` with a BOM, ``utf-16`` with its BOM, ``utf-8`` when the sample decodes,
    else ``latin-1`` (which decodes anything)."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=complete)
        return "utf-8"
    except UnicodeDecodeError:
        return "latin-1"


def _text(stream: IO[bytes], options: dict[str, Any]) -> tuple[io.TextIOWrapper, str, str]:
    """The stream as text (newline-preserving, for csv), its encoding, and a text sample."""
    buffered = io.BufferedReader(cast(Any, stream), buffer_size=SAMPLE_BYTES)
    raw = buffered.peek(SAMPLE_BYTES)[:SAMPLE_BYTES]
    encoding = options.get("encoding") or detect_encoding(raw, complete=len(raw) < SAMPLE_BYTES)
    try:
        sample = raw.decode(encoding, errors="ignore")
    except LookupError as exc:
        raise DataError("options.encoding", f"unknown encoding {encoding!r}") from exc
    text = io.TextIOWrapper(buffered, encoding=encoding, newline="")
    return text, encoding, sample


# --------------------------------------------------------------------------- CSV


def _pick_delimiter(sample: str, ext: str) -> str:
    if ext == "tsv":
        return "\t"
    lines = [line for line in sample.splitlines()[:50] if line.strip()]
    if len(sample) >= SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    best, best_score = ",", (0, 0)
    for delimiter in DELIMITERS:
        try:
            counts = [len(r) for r in csv.reader(lines, delimiter=delimiter) if r]
        except csv.Error:
            continue
        if not counts or max(counts) < 2:
            continue
        consistent = sum(1 for c in counts if c == counts[0])
        score = (consistent, counts[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def looks_like_header(cells: Sequence[Any], next_row: Sequence[Any] | None) -> bool:
    """A header: every cell a non-empty, distinct, non-numeric text; and, when a row
    follows, not a row of the same shape of texts that repeats itself."""
    texts = [c.strip() if isinstance(c, str) else c for c in cells]
    if not texts or any(not isinstance(c, str) or c == "" for c in texts):
        return False
    if len(set(texts)) != len(texts):
        return False
    for text in texts:
        try:
            to_number(text)
            return False
        except CastError:
            pass
    return next_row is None or list(next_row) != list(cells)


def _breaks(cells: Sequence[str]) -> int:
    """Line breaks inside a row's cells (``\\r\\n``, ``\\r`` and ``\\n`` end a line)."""
    return sum(c.count("\n") + c.count("\r") - c.count("\r\n") for c in cells)


def _blank(row: Sequence[str]) -> bool:
    return not any(row) or (len(row) == 1 and not row[0].strip())


class _CsvRows:
    """The data rows of a CSV reader: ``(where, row)`` one at a time (for the header and the
    sample), then blocks (``take``)."""

    def __init__(self, reader: Any, encoding: str) -> None:
        self.reader, self.encoding = reader, encoding
        self.pending: list[tuple[str, list[str]]] = []
        self.width = 0

    def _read(self, n: int) -> list[list[str]]:
        reader = self.reader
        try:
            return list(itertools.islice(reader, n))
        except UnicodeDecodeError as exc:
            # The text layer decodes ahead of the csv reader, a block at a time: count the
            # line ends of the failing block before the bad byte.
            line = reader.line_num + 1 + exc.object[: exc.start].count(b"\n")
            raise DataError(
                f"line {line}",
                f"not valid {self.encoding} text (byte 0x{exc.object[exc.start]:02x}); "
                "save the file as UTF-8 or give options.encoding",
            ) from exc
        except csv.Error as exc:
            raise DataError(f"line {reader.line_num}", f"malformed CSV: {exc}") from exc

    def one(self) -> tuple[str, list[str]] | None:
        """The next data row and its line (blank lines skipped)."""
        while True:
            rows = self._read(1)
            if not rows:
                return None
            if not _blank(rows[0]):
                return f"line {self.reader.line_num}", rows[0]

    def take(self, n: int) -> Block:
        head, self.pending = self.pending[:n], self.pending[n:]
        rows = [cells for _, cells in head]
        wheres = [where for where, _ in head]
        block = self._read(n - len(rows)) if len(rows) < n else []
        last = self.reader.line_num
        odd = self.width == 1 or not all(map(any, block)) or set(map(len, block)) != {self.width}
        if block and odd:  # blank or ragged rows: drop the blank ones, name the lines now
            lines = _lines(block, last)
            kept = [i for i, row in enumerate(block) if not _blank(row)]
            wheres += [f"line {lines[i]}" for i in kept]
            return Block(rows + [block[i] for i in kept], wheres.__getitem__)
        start = len(rows)

        def where(i: int) -> str:
            return wheres[i] if i < start else f"line {_lines(block, last)[i - start]}"

        uniform = bool(rows or block) and all(len(r) == self.width for r in rows)
        return Block(rows + block, where, uniform)


def _lines(block: Sequence[Sequence[str]], last: int) -> list[int]:
    """The line each row of ``block`` ends on, the last row having ended on line ``last``."""
    lines = [0] * len(block)
    for i in range(len(block) - 1, -1, -1):
        lines[i] = last
        last -= 1 + _breaks(block[i])
    return lines


def _csv_table(stream: IO[bytes], ext: str, size: int, options: dict[str, Any]) -> Table:
    text, encoding, sample = _text(stream, options)
    delimiter = options.get("delimiter") or _pick_delimiter(sample, ext)
    rows = _CsvRows(csv.reader(text, delimiter=delimiter, strict=True), encoding)
    first = rows.one()
    if first is None:
        raise DataError("line 1", "the file is empty (no header and no rows)")
    lookahead: list[tuple[str, list[str]]] = []
    while len(lookahead) < SAMPLE_ROWS and (row := rows.one()) is not None:
        lookahead.append(row)
    header_option = options.get("header")
    second = lookahead[0][1] if lookahead else None
    has_header = (
        bool(header_option) if header_option is not None else looks_like_header(first[1], second)
    )
    if has_header:
        columns = keys_for(first[1])
        data = lookahead
    else:
        columns = keys_for([f"Column {i + 1}" for i in range(len(first[1]))])
        data = [first, *lookahead]
    rows.pending, rows.width = list(data), len(columns)
    sample_bytes = max(1, len(sample.encode(encoding, errors="ignore")))
    sample_lines = max(1, sample.count("\n"))
    estimate = int(size / (sample_bytes / sample_lines)) if size else len(data)
    return Table(
        name=options.get("sheetName") or "Sheet1",
        columns=columns,
        sample=[cells for _, cells in data],
        take=rows.take,
        estimated_rows=max(len(data), estimate - (1 if has_header else 0)),
        layout=CsvLayout(delimiter, encoding, has_header),
    )


# --------------------------------------------------------------------------- JSON


def _json_items(text: IO[str]) -> Iterator[tuple[str, Any]]:
    """The items of a top-level JSON array, one at a time (a small buffer, never the file)."""
    decoder = json.JSONDecoder()
    buf, pos, eof, item = "", 0, False, 0

    def fill() -> None:
        nonlocal buf, pos, eof
        more = text.read(SAMPLE_BYTES)
        eof = not more
        buf, pos = buf[pos:] + more, 0

    def skip_ws() -> None:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf) or eof:
                return
            fill()

    fill()
    skip_ws()
    if pos >= len(buf):
        raise DataError("item 1", "the file is empty (expected a JSON array of objects)")
    if buf[pos] != "[":
        raise DataError("item 1", "expected a JSON array of objects")
    pos += 1
    while True:
        skip_ws()
        if pos >= len(buf):
            raise DataError(f"item {item + 1}", "unexpected end of file: the array is not closed")
        if buf[pos] == "]":
            return
        if item:
            if buf[pos] != ",":
                raise DataError(f"item {item + 1}", f"expected ',' or ']', found {buf[pos]!r}")
            pos += 1
            skip_ws()
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
                if end >= len(buf) and not eof and isinstance(value, (int, float)):
                    raise json.JSONDecodeError("number may continue", buf, end)
                break
            except json.JSONDecodeError as exc:
                if eof:
                    raise DataError(f"item {item + 1}", f"invalid JSON: {exc.msg}") from exc
                fill()
        pos = end
        item += 1
        yield f"item {item}", value


def _json_lines(text: IO[str]) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"line {number}", f"invalid JSON: {exc.msg}") from exc


def _json_table(stream: IO[bytes], size: int, options: dict[str, Any], lines: bool) -> Table:
    text, encoding, sample = _text(stream, options)
    items = _json_lines(text) if lines else _json_items(text)

    def objects() -> Iterator[tuple[str, Cells]]:
        for where, value in items:
            if not isinstance(value, dict):
                raise DataError(where, f"expected a JSON object, got {type(value).__name__}")
            yield where, value

    rows = objects()
    head = list(itertools.islice(rows, SAMPLE_ROWS))
    if not head and lines and size == 0:
        raise DataError("line 1", "the file is empty")
    source_keys: list[str] = []
    for _, obj in head:
        assert isinstance(obj, dict)
        for key in obj:
            if key not in source_keys:
                source_keys.append(key)
    columns = keys_for(source_keys)
    sample_rows = max(1, len(head))
    estimate = len(head)
    if head and size:
        per_row = len(sample.encode(encoding, errors="ignore")) / max(1, sample.count("\n"))
        estimate = max(len(head), int(size / max(per_row, 1))) if lines else sample_rows
    return Table(
        name=options.get("sheetName") or "Sheet1",
        columns=columns,
        sample=[[obj.get(k) for k in source_keys] for _, obj in head if isinstance(obj, dict)],
        take=_taker(itertools.chain(head, rows)),
        estimated_rows=estimate,
        keyed=True,
        source_keys=source_keys,
    )


# --------------------------------------------------------------------------- XLSX


def _xlsx_cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, str):
        return value
    return value


def _xlsx_tables(stream: IO[bytes], options: dict[str, Any]) -> list[Table]:
    import zipfile

    from openpyxl import load_workbook  # type: ignore[import-untyped]

    try:
        book = load_workbook(stream, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise DataError("line 1", f"not a readable XLSX file: {exc}") from exc
    tables = []
    for ws in book.worksheets:
        name = ws.title

        def worksheet_rows(ws: Any = ws, name: str = name) -> Iterator[tuple[str, list[Any]]]:
            for number, row in enumerate(ws.iter_rows(values_only=True), start=1):
                cells = [_xlsx_cell(v) for v in row]
                while cells and cells[-1] in (None, ""):
                    cells.pop()
                if not cells:
                    continue
                yield f"sheet {name!r} row {number}", cells

        rows = worksheet_rows()
        first = next(rows, None)
        if first is None:
            continue  # an empty worksheet is no table
        lookahead = list(itertools.islice(rows, SAMPLE_ROWS))
        second = lookahead[0][1] if lookahead else None
        header_option = options.get("header")
        has_header = (
            bool(header_option)
            if header_option is not None
            else looks_like_header(first[1], second)
        )
        width = max([len(first[1])] + [len(c) for _, c in lookahead])
        if has_header:
            columns = keys_for(list(first[1]) + [None] * (width - len(first[1])))
            data = lookahead
        else:
            columns = keys_for([f"Column {i + 1}" for i in range(width)])
            data = [first, *lookahead]
        max_row = ws.max_row if isinstance(ws.max_row, int) else None
        tables.append(
            Table(
                name=name,
                columns=columns,
                sample=[cells for _, cells in data],
                take=_taker(itertools.chain(data, rows)),
                estimated_rows=(max_row - (1 if has_header else 0)) if max_row else len(data),
            )
        )
    if not tables:
        raise DataError("line 1", "the workbook has no rows in any worksheet")
    return tables


# --------------------------------------------------------------------------- writers


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


_PLAIN = frozenset({str, int, float, type(None)})
"""Cell types the csv module writes as ``csv_cell`` renders them (None as empty, numbers
with ``str``)."""


def csv_rows(records: Sequence[dict[str, Any]], keys: Sequence[str]) -> Iterable[Sequence[Any]]:
    """The cells of ``records`` under ``keys`` for the csv module, rendered as ``csv_cell``
    renders them: picked by ``itemgetter`` and checked a column at a time (C-level maps), a
    column of other types (booleans, objects) rendered cell by cell."""
    if len(keys) < 2:
        return ([csv_cell(r.get(k)) for k in keys] for r in records)
    try:
        rows: list[Any] = list(map(itemgetter(*keys), records))
    except KeyError:  # a record without some key: the general way
        return ([csv_cell(r.get(k)) for k in keys] for r in records)
    if not rows:
        return rows
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    rendered = False
    for j, column in enumerate(columns):
        if not _PLAIN.issuperset(map(type, column)):
            columns[j] = list(map(csv_cell, column))
            rendered = True
    return zip(*columns, strict=True) if rendered else rows


def decode_lines(block: bytes) -> list[dict[str, Any]]:
    """Records' ``values`` from JSON Lines (as ``store.stream_json`` reads them)."""
    return list(map(orjson.loads, block.split(b"\n"))) if block else []


class Writer:
    """Writes batches of value dicts into a binary stream in one format.

    With ``native``, ``write_lines`` renders CSV/TSV blocks with Arrow
    (``native_export.csv_block``: the same bytes, several times faster) when it can; an
    export renders blocks on threads of their own (``render_lines``) and writes them in order
    (``put_lines``)."""

    def __init__(
        self,
        out: IO[bytes],
        keys: list[str],
        fmt: str,
        sheet_names: list[str],
        *,
        native: bool = False,
    ) -> None:
        self.out, self.keys, self.fmt = out, keys, fmt
        self.native = native and fmt in ("csv", "tsv")
        self._fields: Sequence[SheetField] | None = None
        self._text: io.TextIOWrapper | None = None
        self._book: Any = None
        self._ws: Any = None
        self._sheet_names = sheet_names
        if fmt in ("csv", "tsv"):
            self._text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=False)
            self._csv = csv.writer(self._text, delimiter="\t" if fmt == "tsv" else ",")
        elif fmt == "jsonl":
            self._text = io.TextIOWrapper(out, encoding="utf-8", newline="\n")
        elif fmt == "xlsx":
            from openpyxl import Workbook

            self._book = Workbook(write_only=True)
        else:
            raise ValueError(f"unknown export format {fmt!r}")

    def start_sheet(self, name: str, fields: Sequence[SheetField]) -> None:
        self.keys = keys = [f.key for f in fields]
        self._fields = fields if self.native and native_export.usable(fields) else None
        if self.fmt == "xlsx":
            self._ws = self._book.create_sheet(title=name[:31] or "Sheet")
            self._ws.append(keys)
        elif self.fmt in ("csv", "tsv"):
            self._csv.writerow(keys)

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        keys = self.keys
        if self.fmt in ("csv", "tsv"):
            self._csv.writerows(csv_rows(list(rows), keys))
        elif self.fmt == "jsonl":
            assert self._text is not None
            dumps: Callable[..., str] = json.dumps
            self._text.write(
                "".join(dumps({k: r.get(k) for k in keys}, ensure_ascii=False) + "\n" for r in rows)
            )
        else:
            for r in rows:
                self._ws.append([_xlsx_out(r.get(k)) for k in keys])

    def write_lines(self, block: bytes, count: int) -> None:
        """``count`` records' ``values`` as JSON Lines."""
        self.put_lines(block, self.render_lines(block, count))

    def render_lines(self, block: bytes, count: int) -> bytes | None:
        """Arrow's rendering of a block for ``put_lines``, or ``None`` (the block goes the
        Python way). Safe on another thread while the writer writes: it reads only the
        current sheet's fields."""
        if self._fields is None or not count:
            return None
        return native_export.csv_block(block, count, self._fields, self._csv.dialect.delimiter)

    def put_lines(self, block: bytes, rendered: bytes | None) -> None:
        """Write a block: its ``render_lines`` bytes, or (``None``) its records."""
        if rendered is None:
            self.write(decode_lines(block))
            return
        assert self._text is not None
        self._text.flush()
        self.out.write(rendered)

    def flush(self) -> None:
        if self._text is not None:
            self._text.flush()

    def close(self) -> None:
        if self._text is not None:
            self._text.flush()
            self._text.detach()
        if self._book is not None:
            self._book.save(self.out)


def _xlsx_out(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value
