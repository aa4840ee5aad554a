"""Python API of the data store: files, workbooks, sheets and records.

Every function takes an optional ``organization`` (a name; default: the settings'
``default_organization``), sees only that organization's objects (another's ids raise
``NotFoundError``) and returns public schemas (camelCase on the wire).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from jobs_plugin import ids
from jobs_plugin.api import organization_id
from jobs_plugin.data import files, formats, schema, store
from jobs_plugin.data.models import (
    FILE_PREFIX,
    Cell,
    CellMessage,
    DataFile,
    FilePublic,
    FileStatus,
    RecordPublic,
    RecordsPage,
    RecordUpdate,
    Sheet,
    SheetPublic,
    Workbook,
    WorkbookCreate,
    WorkbookPublic,
    WorkbookUpdate,
    cell_value,
    record_id,
    record_seq,
)
from jobs_plugin.errors import ValidationError
from jobs_plugin.models import Page, check_page
from jobs_plugin.settings import get_settings

MAX_PAGE_SIZE = 10_000

__all__ = [
    "create_workbook",
    "delete_file",
    "delete_records",
    "delete_workbook",
    "download_file",
    "get_file",
    "get_records",
    "get_sheet",
    "get_workbook",
    "insert_records",
    "iter_sheet_csv",
    "list_files",
    "list_sheets",
    "list_workbooks",
    "open_file",
    "update_records",
    "update_workbook",
    "upload_file",
]


def _validation(exc: Exception, prefix: str = "") -> ValidationError:
    from pydantic import ValidationError as PydanticError
    from pydantic.alias_generators import to_camel

    if isinstance(exc, PydanticError):
        first = exc.errors()[0]
        key = ""
        for part in first["loc"]:
            key += f"[{part}]" if isinstance(part, int) else f"{'.' if key else ''}{to_camel(part)}"
        key = key or "body"
        return ValidationError(f"{prefix}{key}" if prefix else key, first["msg"])
    return ValidationError(prefix or "body", str(exc))


# --------------------------------------------------------------------------- files


FILE_MODES = ("import", "export")
_FILE_LIMITS = {"name": 500, "spaceId": 60, "environmentId": 60}


def _check_file_fields(**fields: str | None) -> None:
    """Reject a file's fields before any byte is stored (the table's column limits)."""
    if fields["mode"] not in FILE_MODES:
        raise ValidationError("mode", f"must be one of {', '.join(FILE_MODES)}")
    for key, limit in _FILE_LIMITS.items():
        value = fields[key]
        if value is not None and len(value) > limit:
            raise ValidationError(key, f"must be at most {limit} characters, got {len(value)}")


def upload_file(
    source: str | os.PathLike[str] | bytes | IO[bytes],
    *,
    name: str | None = None,
    space_id: str | None = None,
    environment_id: str | None = None,
    mode: str = "import",
    organization: str | None = None,
) -> FilePublic:
    """Store a file (a path, bytes or a binary stream, copied in 1 MiB blocks)."""
    org = organization_id(organization)
    if isinstance(source, (str, os.PathLike)):
        name = name or Path(source).name
        stream: IO[bytes] = open(source, "rb")  # noqa: SIM115 (closed below)
    elif isinstance(source, bytes):
        stream = io.BytesIO(source)
    else:
        stream = source
    if not name:
        raise ValidationError("name", "is required for bytes and streams")
    _check_file_fields(name=name, mode=mode, spaceId=space_id, environmentId=environment_id)
    file_id = ids.new_id(FILE_PREFIX)
    size = 0
    try:
        with files.open_write(file_id) as out:
            while block := stream.read(files.COPY_CHUNK):
                out.write(block)
                size += len(block)
    finally:
        if isinstance(source, (str, os.PathLike)):
            stream.close()
    try:
        row = store.create_file(
            org,
            id=file_id,
            name=name,
            ext=formats.extension_of(name),
            mimetype=formats.mimetype_of(name),
            size=size,
            bytes_received=size,
            status=FileStatus.COMPLETE.value,
            mode=mode,
            space_id=space_id,
            environment_id=environment_id,
        )
    except BaseException:
        files.remove(file_id)
        raise
    return FilePublic.model_validate(row)


def list_files(
    *,
    page_number: int = 1,
    page_size: int = 50,
    mode: str | None = None,
    organization: str | None = None,
) -> Page[FilePublic]:
    page = store.list_files(
        organization_id(organization), page_number=page_number, page_size=page_size, mode=mode
    )
    return page.map(FilePublic.model_validate)


def get_file(file_id: str, *, organization: str | None = None) -> FilePublic:
    return FilePublic.model_validate(store.get_file(organization_id(organization), file_id))


def _file(file_id: str, organization: str | None) -> DataFile:
    return store.get_file(organization_id(organization), file_id)


def open_file(file_id: str, *, organization: str | None = None) -> IO[bytes]:
    """The file's bytes as a binary stream (close it)."""
    return files.open_read(_file(file_id, organization).storage_key)


def iter_file(file_id: str, *, organization: str | None = None) -> Iterator[bytes]:
    """The file's bytes in blocks (for streaming responses). The id is checked at once."""
    return files.iter_bytes(_file(file_id, organization).storage_key)


def download_file(
    file_id: str,
    destination: str | os.PathLike[str] | None = None,
    *,
    organization: str | None = None,
) -> bytes | Path:
    """The file's bytes, or (with ``destination``) the path they were copied to; a folder as
    ``destination`` receives the file under its own name."""
    row = _file(file_id, organization)
    if destination is None:
        return b"".join(files.iter_bytes(row.storage_key))
    target = Path(destination)
    if target.is_dir():
        target = target / row.name
    with open(target, "wb") as out:
        for block in files.iter_bytes(row.storage_key):
            out.write(block)
    return target


def delete_file(file_id: str, *, organization: str | None = None) -> None:
    row = store.delete_file(organization_id(organization), file_id)
    files.remove(row.storage_key)


# --------------------------------------------------------------------------- workbooks, sheets


def _sheet_public(sheet: Sheet, counts: bool = False) -> SheetPublic:
    public = SheetPublic.model_validate(sheet)
    if counts:
        public.record_counts = store.record_counts(sheet.organization_id, sheet.id)
    return public


def _workbook_public(workbook: Workbook, sheets: Sequence[Sheet]) -> WorkbookPublic:
    return WorkbookPublic.of(workbook, [_sheet_public(s) for s in sheets])


def create_workbook(
    spec: WorkbookCreate | dict[str, Any] | None = None,
    *,
    organization: str | None = None,
    **fields: Any,
) -> WorkbookPublic:
    """A workbook with its sheets: ``{name, spaceId?, environmentId?, labels?, metadata?,
    sheets?: [SheetConfig]}`` (snake_case keywords work too)."""
    try:
        body = (
            spec
            if isinstance(spec, WorkbookCreate)
            else WorkbookCreate.model_validate({**(spec or {}), **fields})
        )
    except Exception as exc:
        raise _validation(exc) from exc
    workbook, sheets = store.create_workbook(
        organization_id(organization),
        name=body.name,
        sheets=body.sheets,
        space_id=body.space_id,
        environment_id=body.environment_id,
        labels=body.labels,
        metadata=body.metadata,
    )
    return _workbook_public(workbook, sheets)


def list_workbooks(
    *, page_number: int = 1, page_size: int = 50, organization: str | None = None
) -> Page[WorkbookPublic]:
    page = store.list_workbooks(
        organization_id(organization), page_number=page_number, page_size=page_size
    )
    return page.map(lambda item: _workbook_public(*item))


def get_workbook(workbook_id: str, *, organization: str | None = None) -> WorkbookPublic:
    return _workbook_public(*store.get_workbook(organization_id(organization), workbook_id))


def update_workbook(
    workbook_id: str,
    spec: WorkbookUpdate | dict[str, Any] | None = None,
    *,
    organization: str | None = None,
    **fields: Any,
) -> WorkbookPublic:
    try:
        body = (
            spec
            if isinstance(spec, WorkbookUpdate)
            else WorkbookUpdate.model_validate({**(spec or {}), **fields})
        )
    except Exception as exc:
        raise _validation(exc) from exc
    changes = body.model_dump(exclude_unset=True, exclude={"sheets"})
    workbook, sheets = store.update_workbook(
        organization_id(organization), workbook_id, changes=changes, sheets=body.sheets
    )
    return _workbook_public(workbook, sheets)


def delete_workbook(workbook_id: str, *, organization: str | None = None) -> None:
    store.delete_workbook(organization_id(organization), workbook_id)


def list_sheets(workbook_id: str, *, organization: str | None = None) -> list[SheetPublic]:
    _, sheets = store.get_workbook(organization_id(organization), workbook_id)
    return [_sheet_public(s) for s in sheets]


def get_sheet(
    sheet_id: str, *, include_counts: bool = True, organization: str | None = None
) -> SheetPublic:
    return _sheet_public(store.get_sheet(organization_id(organization), sheet_id), include_counts)


# --------------------------------------------------------------------------- records


def record_public(row: Any, fields: Sequence[str] | None = None) -> RecordPublic:
    mapping = row._mapping
    values: dict[str, Any] = mapping["values"] or {}
    messages: dict[str, Any] = mapping["messages"] or {}
    keys = [k for k in fields if k in values] if fields else list(values)
    cells = {}
    for key in keys:
        cell_messages = messages.get(key)
        cells[key] = Cell(
            value=values.get(key),
            valid=not cell_messages,
            messages=[CellMessage(**m) for m in cell_messages] if cell_messages else [],
        )
    return RecordPublic(
        id=record_id(mapping["seq"]),
        values=cells,
        valid=bool(mapping["valid"]),
        metadata=mapping["metadata"] or {},
    )


def get_records(
    sheet_id: str,
    *,
    page_size: int = MAX_PAGE_SIZE,
    page_number: int = 1,
    filter: str = "all",
    filter_field: str | None = None,
    search_value: str | None = None,
    search_field: str | None = None,
    q: str | None = None,
    ids: Sequence[str] | None = None,
    fields: Sequence[str] | None = None,
    sort_field: str | None = None,
    sort_direction: str = "asc",
    include_counts: bool = False,
    organization: str | None = None,
) -> RecordsPage:
    """One page of a sheet's records with Flatfile's filters (see ``store.RecordQuery``)."""
    check_page(page_number, page_size, MAX_PAGE_SIZE)
    org = organization_id(organization)
    query = store.RecordQuery(
        filter=filter,
        filter_field=filter_field,
        search_value=search_value,
        search_field=search_field,
        q=q,
        ids=list(ids or []),
        sort_field=sort_field,
        sort_direction=sort_direction,
    )
    _, rows, total = store.query_records(
        org, sheet_id, query, page_number=page_number, page_size=page_size
    )
    return RecordsPage(
        records=[record_public(r, fields) for r in rows],
        counts=store.record_counts(org, sheet_id) if include_counts else None,
        total=total,
    )


def _validator(org: str, sheet_id: str) -> tuple[schema.Validator, set[str], bool]:
    config = store.get_sheet(org, sheet_id).sheet_config
    return (
        schema.Validator(config),
        {f.key for f in config.fields},
        config.allow_additional_fields,
    )


def _plain(cells: dict[str, Any], known: set[str], extra_ok: bool, where: str) -> dict[str, Any]:
    if not isinstance(cells, dict):
        raise ValidationError(where, "must be an object of field keys to cells")
    out = {}
    for key, cell in cells.items():
        if key not in known and not extra_ok:
            raise ValidationError(f"{where}.{key}", "is not a field of the sheet")
        try:
            out[key] = cell_value(cell)
        except ValidationError:
            raise ValidationError(f"{where}.{key}", "a cell is {'value': ...}") from None
    return out


def _list_body(records: Any) -> list[Any]:
    if not isinstance(records, list):
        raise ValidationError("body", "must be a list of records")
    return records


def insert_records(
    sheet_id: str, records: Sequence[dict[str, Any]], *, organization: str | None = None
) -> RecordsPage:
    """Add records (``[{fieldKey: {"value": v}}]``, bare values accepted); each is validated
    against the sheet's fields, invalid cells kept with messages."""
    org = organization_id(organization)
    validator, known, extra_ok = _validator(org, sheet_id)
    records = _list_body(records)
    rows = [validator.validate(_plain(r, known, extra_ok, f"[{i}]")) for i, r in enumerate(records)]
    seqs = store.insert_records(org, sheet_id, validator.check_unique(rows))
    stored = store.read_for_update(org, sheet_id, seqs)
    return RecordsPage(records=[record_public(r) for r in stored], total=len(stored))


def update_records(
    sheet_id: str,
    records: Sequence[RecordUpdate | dict[str, Any]],
    *,
    organization: str | None = None,
) -> RecordsPage:
    """Change cells of records (``[{id, values: {fieldKey: {value}}}]``); cells not named keep
    their value; the whole record is validated again."""
    org = organization_id(organization)
    validator, known, extra_ok = _validator(org, sheet_id)
    records = _list_body(records)
    try:
        updates = [
            r if isinstance(r, RecordUpdate) else RecordUpdate.model_validate(r) for r in records
        ]
    except Exception as exc:
        raise _validation(exc) from exc
    seqs = [record_seq(u.id) for u in updates]
    current = {int(r.seq): r for r in store.read_for_update(org, sheet_id, seqs)}
    changes = []
    for i, (update, seq) in enumerate(zip(updates, seqs, strict=True)):
        row = current.get(seq)
        if row is None:
            from jobs_plugin.data.models import RecordNotFound

            raise RecordNotFound(update.id)
        merged = {
            **row._mapping["values"],
            **_plain(update.values, known, extra_ok, f"[{i}].values"),
        }
        values, messages = validator.validate(merged)
        changes.append((seq, values, messages))
    store.update_records(org, sheet_id, changes)
    stored = store.read_for_update(org, sheet_id, seqs)
    return RecordsPage(records=[record_public(r) for r in stored], total=len(stored))


def delete_records(sheet_id: str, ids: Sequence[str], *, organization: str | None = None) -> int:
    """Delete records by id; how many were deleted."""
    org = organization_id(organization)
    store.get_sheet(org, sheet_id)
    if not ids:
        raise ValidationError("ids", "give at least one record id")
    return store.delete_records(
        organization_id(organization), sheet_id, [record_seq(i) for i in ids]
    )


def iter_sheet_csv(
    sheet_id: str,
    *,
    filter: str = "all",
    filter_field: str | None = None,
    search_value: str | None = None,
    search_field: str | None = None,
    sort_field: str | None = None,
    sort_direction: str = "asc",
    organization: str | None = None,
) -> Iterator[bytes]:
    """A sheet as CSV (UTF-8, a header of field keys), in blocks, streamed from one read.
    The sheet id and the query are checked before the first block."""
    org = organization_id(organization)
    sheet = store.get_sheet(org, sheet_id)
    query = store.RecordQuery(
        filter=filter,
        filter_field=filter_field,
        search_value=search_value,
        search_field=search_field,
        sort_field=sort_field,
        sort_direction=sort_direction,
    )
    query.check()

    def generate() -> Iterator[bytes]:
        buffer = io.BytesIO()
        writer = formats.Writer(buffer, [], "csv", [sheet.name], native=get_settings().native_csv)
        writer.start_sheet(sheet.name, sheet.sheet_config.fields)
        batches = store.stream_json(org, sheet_id, query, batch=5000)
        with contextlib.closing(batches):
            for count, lines in batches:
                writer.write_lines(lines, count)
                writer.flush()
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        writer.close()
        rest = buffer.getvalue()
        if rest:
            yield rest

    return generate()
