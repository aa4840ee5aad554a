"""Cell validation and type inference against a sheet's fields (pure functions).

A cell that does not fit its field keeps the raw value and gets a message; a record is valid
when none of its cells has one. Dates are stored as ISO ``YYYY-MM-DD`` strings, numbers as
``int`` when integral and ``float`` otherwise, empty strings as ``None``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from itertools import repeat
from typing import Any

from jobs_plugin.data.models import FieldType, SheetConfig, SheetField

Messages = dict[str, list[dict[str, str]]]
DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%m/%d/%Y", "%d.%m.%Y", "%Y-%m-%dT%H:%M:%S")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$")
_TRUE = {"true", "yes", "y", "t", "1"}
_FALSE = {"false", "no", "n", "f", "0"}
_BOOLEANS = {**dict.fromkeys(_TRUE, True), **dict.fromkeys(_FALSE, False)}
_KEY_CHARS = re.compile(r"[^0-9a-zA-Z]+")
_SAFE = 2**53
"""Integers at or above this (in size) are kept as floats, as JSON clients read them."""


class CastError(ValueError):
    """A value that does not fit a field's type; the message is the cell's message."""


def to_number(value: Any) -> int | float:
    """``int`` when integral (below 2**53 in size), else a finite ``float``. The common case,
    a decimal string, takes the C conversions ``int()``/``float()`` only."""
    kind = type(value)
    if kind is str:
        if "_" not in value:
            if "." not in value and "e" not in value and "E" not in value:
                try:
                    whole = int(value)
                    if -_SAFE < whole < _SAFE:
                        return whole
                except ValueError:
                    pass
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                return int(number) if number.is_integer() and abs(number) < _SAFE else number
        raise CastError(f"must be a number, got {_shown(value)}")
    if kind is int:
        if -_SAFE < value < _SAFE:
            return int(value)
        try:
            return to_number(float(value))
        except OverflowError:
            raise CastError("must be a finite number") from None
    if kind is float:
        if not math.isfinite(value):
            raise CastError("must be a finite number")
        return int(value) if value.is_integer() and abs(value) < 2**53 else float(value)
    if kind is bool or not isinstance(value, (int, float)):
        raise CastError(f"must be a number, got {_shown(value)}")
    return to_number(float(value))


def to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    found = _BOOLEANS.get(str(value).strip().lower())
    if found is not None:
        return found
    raise CastError(f"must be a boolean (true/false, yes/no), got {_shown(value)}")


def to_date(value: Any, formats: Sequence[str] = DATE_FORMATS) -> str:
    if type(value) is str and len(value) == 10 and formats is DATE_FORMATS:
        try:
            return date.fromisoformat(value).isoformat()  # the common case, in C
        except ValueError:
            pass
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = str(value).strip()
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    if _ISO_DATE.match(text):
        try:
            return datetime.fromisoformat(text).date().isoformat()
        except ValueError:
            pass
    raise CastError(f"must be a date ({', '.join(formats)}), got {_shown(value)}")


def to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Validator:
    """Validates rows (``{key: raw value}``) against a sheet's fields, fast enough for bulk
    loads: one pass per row, no allocation for valid cells beyond the values dict."""

    def __init__(self, config: SheetConfig) -> None:
        self.fields = list(config.fields)
        self.allow_additional = config.allow_additional_fields
        self._keys = {f.key for f in self.fields}
        self._plans: list[tuple[str, Callable[[Any], Any] | None, bool]] = []
        for f in self.fields:
            self._plans.append((f.key, _converter(f), f.has("required")))
        self._unique = [f.key for f in self.fields if f.has("unique")]
        self._fast = [_fast_converter(f) for f in self.fields]

    def validate(self, row: dict[str, Any]) -> tuple[dict[str, Any], Messages | None]:
        values: dict[str, Any] = {}
        messages: Messages | None = None
        get = row.get
        for key, convert, required in self._plans:
            values[key], problem = _cell(convert, required, get(key))
            if problem is not None:
                messages = messages or {}
                messages[key] = [{"type": "error", "message": problem}]
        if self.allow_additional:
            for key, raw in row.items():
                if key not in self._keys:
                    values[key] = raw
        return values, messages

    def validate_columns(
        self, rows: Sequence[Sequence[str]], positions: Sequence[int | None]
    ) -> list[tuple[dict[str, Any], Messages | None]]:
        """``validate`` of rows of text cells (CSV rows), field ``j`` in cell
        ``positions[j]`` (None: no cell), one column at a time: a column whose cells all have
        the plain form of the field's type is converted by C-level maps, any other cell by
        cell as ``validate`` does it. The results are ``validate``'s."""
        if not rows:
            return []
        columns = list(zip(*rows, strict=True))
        problems: dict[int, Messages] = {}
        converted: list[Sequence[Any]] = []
        for (key, convert, required), fast, at in zip(
            self._plans, self._fast, positions, strict=True
        ):
            column: Sequence[Any] = columns[at] if at is not None else [None] * len(rows)
            values = fast(column) if at is not None and "" not in column else None
            if values is None:
                values = _by_cell(key, convert, required, column, problems)
            converted.append(values)
        keys = [key for key, _, _ in self._plans]
        records = list(map(dict, map(zip, repeat(keys), zip(*converted, strict=True))))
        out: list[tuple[dict[str, Any], Messages | None]] = list(zip(records, repeat(None)))
        for i, messages in problems.items():
            out[i] = (records[i], messages)
        return out

    def check_unique(
        self, rows: list[tuple[dict[str, Any], Messages | None]]
    ) -> list[tuple[dict[str, Any], Messages | None]]:
        """Mark duplicates of ``unique`` fields within ``rows`` (one chunk)."""
        if not self._unique:
            return rows
        out = []
        seen: dict[str, set[Any]] = {k: set() for k in self._unique}
        for values, messages in rows:
            for key in self._unique:
                value = values.get(key)
                if value is None:
                    continue
                marker = json.dumps(value, sort_keys=True)
                if marker in seen[key]:
                    messages = dict(messages or {})
                    messages[key] = [{"type": "error", "message": "must be unique"}]
                seen[key].add(marker)
            out.append((values, messages))
        return out


def _cell(convert: Callable[[Any], Any] | None, required: bool, raw: Any) -> tuple[Any, str | None]:
    """A cell's value and its error (None: valid): empty is None, required or not; a cast that
    fails keeps the raw value."""
    if raw is None or raw == "":
        return None, "is required" if required else None
    if convert is None:  # a string field given a string: nothing to do
        if type(raw) is str:
            return raw, None
        convert = to_string
    try:
        return convert(raw), None
    except CastError as exc:
        return raw, str(exc)


def _by_cell(
    key: str,
    convert: Callable[[Any], Any] | None,
    required: bool,
    column: Sequence[Any],
    problems: dict[int, Messages],
) -> list[Any]:
    """A column the way ``Validator.validate`` takes a cell; messages go to ``problems``."""
    out: list[Any] = []
    for i, raw in enumerate(column):
        value, problem = _cell(convert, required, raw)
        out.append(value)
        if problem is not None:
            problems.setdefault(i, {})[key] = [{"type": "error", "message": problem}]
    return out


FastColumn = Callable[[Sequence[str]], list[Any] | None]


def _fast_strings(column: Sequence[str]) -> list[Any] | None:
    return list(column)


def _fast_numbers(column: Sequence[str]) -> list[Any] | None:
    """``to_number`` of every cell by ``map(int)`` / ``map(float)``; None when a cell needs
    ``to_number`` itself (an error, an underscore, NaN, infinity, 2**53 and above)."""
    joined = "".join(column)
    if "_" in joined:
        return None
    try:
        if "." not in joined and "e" not in joined and "E" not in joined:
            whole = list(map(int, column))
            return whole if max(map(abs, whole)) < _SAFE else None
        floats = list(map(float, column))
    except ValueError:
        return None
    if any(map(math.isnan, floats)) or any(map(math.isinf, floats)):
        return None
    if max(map(abs, floats)) >= _SAFE:
        return None
    return [int(f) if f.is_integer() else f for f in floats]


def _fast_booleans(column: Sequence[str]) -> list[Any] | None:
    values = list(map(_BOOLEANS.get, map(str.lower, map(str.strip, column))))
    return None if None in values else values


def _fast_dates(column: Sequence[str]) -> list[Any] | None:
    """ISO dates (``to_date``'s ``date.fromisoformat`` case: ten characters)."""
    if set(map(len, column)) != {10}:
        return None
    try:
        return list(map(date.isoformat, map(date.fromisoformat, column)))
    except ValueError:
        return None


_COLUMN_CASTS: dict[FieldType, FastColumn] = {
    FieldType.STRING: _fast_strings,
    FieldType.NUMBER: _fast_numbers,
    FieldType.BOOLEAN: _fast_booleans,
    FieldType.DATE: _fast_dates,
}


def _options(f: SheetField) -> frozenset[Any]:
    return frozenset(o.value for o in (f.config.options if f.config else []))


def _fast_converter(f: SheetField) -> FastColumn:
    """The column converter of a field's type (see ``Validator.validate_columns``)."""
    known = _COLUMN_CASTS.get(f.type)
    if known is not None:
        return known
    options = _options(f)
    return lambda column: list(column) if options.issuperset(column) else None


_CELL_CASTS: dict[FieldType, Callable[[Any], Any]] = {
    FieldType.NUMBER: to_number,
    FieldType.BOOLEAN: to_boolean,
    FieldType.DATE: to_date,
}


def _converter(f: SheetField) -> Callable[[Any], Any] | None:
    """The cast of a field's type (None: a string field, the fast path)."""
    if f.type is FieldType.STRING:
        return None
    known = _CELL_CASTS.get(f.type)
    if known is not None:
        return known
    options = _options(f)
    return lambda raw: _cast(FieldType.ENUM, raw, options)


def _cast(kind: FieldType, raw: Any, options: frozenset[Any] | None) -> Any:
    if kind is FieldType.STRING:
        return to_string(raw)
    if kind is FieldType.NUMBER:
        return to_number(raw)
    if kind is FieldType.BOOLEAN:
        return to_boolean(raw)
    if kind is FieldType.DATE:
        return to_date(raw)
    value = to_string(raw) if not isinstance(raw, (int, float)) else raw
    if options is not None and value not in options:
        shown = ", ".join(sorted(str(o) for o in options)[:10])
        raise CastError(f"must be one of {shown}; got {_shown(raw)}")
    return value


def infer_fields(headers: Sequence[tuple[str, str]], sample: Iterable[Any]) -> list[SheetField]:
    """Fields for ``headers`` (``(key, label)``) with types guessed from sample rows: a column
    is a number, boolean or date when every non-empty sampled cell is one, else a string."""
    candidates = [{FieldType.NUMBER, FieldType.BOOLEAN, FieldType.DATE} for _ in headers]
    seen = [False] * len(headers)
    for row in sample:
        cells = list(row.values()) if isinstance(row, dict) else list(row)
        for i, raw in enumerate(cells[: len(headers)]):
            if raw is None or raw == "" or not candidates[i]:
                continue
            seen[i] = True
            for kind in list(candidates[i]):
                if not _fits(kind, raw):
                    candidates[i].discard(kind)
    fields = []
    for (key, label), kinds, any_value in zip(headers, candidates, seen, strict=True):
        kind = FieldType.STRING
        if any_value:
            for preferred in (FieldType.BOOLEAN, FieldType.NUMBER, FieldType.DATE):
                if preferred in kinds:
                    kind = preferred
                    break
        fields.append(SheetField(key=key, label=label, type=kind))
    return fields


def _fits(kind: FieldType, raw: Any) -> bool:
    try:
        if kind is FieldType.BOOLEAN:
            if isinstance(raw, bool):
                return True
            return str(raw).strip().lower() in {"true", "false", "yes", "no"}
        if kind is FieldType.NUMBER:
            to_number(raw)
        elif kind is FieldType.DATE:
            if isinstance(raw, (date, datetime)):
                return True
            if not _ISO_DATE.match(str(raw).strip()):
                return False
            to_date(raw)
        return True
    except CastError:
        return False


def keys_for(headers: Sequence[Any]) -> list[tuple[str, str]]:
    """Field ``(key, label)`` pairs for header cells: keys are lower snake_case and unique."""
    out: list[tuple[str, str]] = []
    used: set[str] = set()
    for i, header in enumerate(headers):
        label = to_string(header).strip() if header not in (None, "") else f"Column {i + 1}"
        key = _KEY_CHARS.sub("_", label).strip("_").lower() or f"column_{i + 1}"
        if key[0].isdigit():
            key = f"c_{key}"
        base, n = key, 2
        while key in used:
            key, n = f"{base}_{n}", n + 1
        used.add(key)
        out.append((key, label))
    return out
