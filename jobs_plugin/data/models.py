"""Tables and API schemas of the data store: files, workbooks, sheets, records, checkpoints.

The data store is a database of its own (``settings.data_url``), so these tables live on their
own SQLAlchemy metadata (``DataModel``), apart from the catalog's. Files, workbooks and sheets
follow the catalog's split (``XBase``, ``X(table=True)``, ``XCreate``, ``XUpdate``,
``XPublic``); records are a SQLAlchemy Core table written in bulk (``record_table``).

A record's id is not stored: it is ``us_rc_`` followed by its row number (``seq``) in base 36,
so a million new records cost no random ids. Each sheet owns a range of row numbers (its
``number`` times ``2**RANGE_BITS`` on), so its records are one stretch of the table's primary
key: no index on the sheet is written per record, and a sheet is read by a key range.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, field_validator
from pydantic import Field as PydanticField
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from jobs_plugin.errors import NotFoundError, ValidationError
from jobs_plugin.models import UTCDateTime, _api_config, utcnow

FILE_PREFIX = "us_fl"
WORKBOOK_PREFIX = "us_wb"
SHEET_PREFIX = "us_sh"
RECORD_PREFIX = "us_rc"
RANGE_BITS = 36
"""Row numbers per sheet: 2**36 (68.7 billion records written over a sheet's life; the row
numbers of deleted records are not given again), for 2**27 sheets in a signed 64-bit key."""
LEGACY_ROWS = f"(seq >> {RANGE_BITS}) = 0"
"""The records of sheets made before sheets had ranges (``number`` NULL), numbered below
``2**RANGE_BITS``: the WHERE of the partial index that finds them by sheet, and a term of
their queries. A shift, not ``seq < 2**36``: a query's own bound on ``seq`` is then the only
range SQLite can take (of two upper bounds, it may take the looser one)."""
_RECORD_ID_DIGITS = 12
API = _api_config(from_attributes=True)


class FileNotFound(NotFoundError):
    kind = "file"


class WorkbookNotFound(NotFoundError):
    kind = "workbook"


class SheetNotFound(NotFoundError):
    kind = "sheet"


class RecordNotFound(NotFoundError):
    kind = "record"


def record_id(seq: int) -> str:
    """The wire id of the record stored at row ``seq``."""
    return f"{RECORD_PREFIX}_{_base36(seq).rjust(_RECORD_ID_DIGITS, '0')}"


def record_seq(rid: str) -> int:
    """The row of a record id; a malformed id is a ``RecordNotFound``."""
    prefix = RECORD_PREFIX + "_"
    if not rid.startswith(prefix):
        raise RecordNotFound(rid)
    try:
        return int(rid[len(prefix) :], 36)
    except ValueError:
        raise RecordNotFound(rid) from None


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


class DataModel(SQLModel, registry=registry()):
    """Base of the data store's tables: their own metadata, not the catalog's."""


def _ts() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


def _json() -> Any:
    return Field(default=None, sa_type=sa.JSON, nullable=True)


# --------------------------------------------------------------------------- field config


class FieldType(str, Enum):
    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    ENUM = "enum"


class Constraint(BaseModel):
    model_config = _api_config(extra="allow")
    type: str = PydanticField(description="`required` or `unique` (others are kept, unchecked).")


class EnumOption(BaseModel):
    model_config = _api_config(extra="allow")
    value: Any
    label: str | None = None


class EnumConfig(BaseModel):
    model_config = _api_config(extra="allow")
    options: list[EnumOption] = []


class SheetField(BaseModel):
    """One field of a sheet, Flatfile's ``Property``."""

    model_config = _api_config(extra="allow")
    key: str = PydanticField(min_length=1, max_length=200)
    type: FieldType = FieldType.STRING
    label: str | None = None
    description: str | None = None
    constraints: list[Constraint] = []
    config: EnumConfig | None = None

    def has(self, constraint: str) -> bool:
        return any(c.type == constraint for c in self.constraints)


class SheetConfig(BaseModel):
    """Flatfile's ``SheetConfig``: a name, fields, and options."""

    model_config = _api_config(extra="allow")
    name: str = PydanticField(min_length=1, max_length=200)
    slug: str | None = None
    description: str | None = None
    readonly: bool = False
    allow_additional_fields: bool = False
    fields: list[SheetField] = []

    @field_validator("fields")
    @classmethod
    def _unique_keys(cls, fields: list[SheetField]) -> list[SheetField]:
        seen: set[str] = set()
        for f in fields:
            if f.key in seen:
                raise ValueError(f"duplicate field key {f.key!r}")
            seen.add(f.key)
        return fields


# --------------------------------------------------------------------------- file


class FileStatus(str, Enum):
    PARTIAL = "partial"
    COMPLETE = "complete"
    ARCHIVED = "archived"
    PURGED = "purged"
    FAILED = "failed"


class FileBase(DataModel):
    name: str = Field(max_length=500)
    ext: str = Field(default="", max_length=20)
    mimetype: str = Field(default="application/octet-stream", max_length=200)
    encoding: str = Field(default="", max_length=40)
    status: str = Field(default=FileStatus.PARTIAL.value, max_length=20)
    mode: str = Field(default="import", max_length=20)
    size: int = Field(default=0, sa_type=sa.BigInteger)
    bytes_received: int = Field(default=0, sa_type=sa.BigInteger)
    space_id: str | None = Field(default=None, max_length=60)
    environment_id: str | None = Field(default=None, max_length=60)
    workbook_id: str | None = Field(default=None, max_length=40)
    sheet_id: str | None = Field(default=None, max_length=40)


class DataFile(FileBase, table=True):
    __tablename__ = "data_file"
    id: str = Field(primary_key=True, max_length=40)
    organization_id: str = Field(index=True, max_length=40)
    storage_key: str = Field(max_length=1000)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class FilePublic(FileBase):
    model_config = API
    id: str
    created_at: datetime
    updated_at: datetime


# --------------------------------------------------------------------------- workbook, sheet


class WorkbookBase(DataModel):
    name: str = Field(max_length=200)
    space_id: str | None = Field(default=None, max_length=60)
    environment_id: str | None = Field(default=None, max_length=60)
    labels: list[str] | None = _json()
    metadata_: dict[str, Any] | None = Field(
        default=None, sa_column=sa.Column("metadata", sa.JSON, nullable=True)
    )


class Workbook(WorkbookBase, table=True):
    __tablename__ = "data_workbook"
    id: str = Field(primary_key=True, max_length=40)
    organization_id: str = Field(index=True, max_length=40)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class WorkbookCreate(BaseModel):
    model_config = _api_config()
    name: str = PydanticField(min_length=1, max_length=200)
    space_id: str | None = None
    environment_id: str | None = None
    labels: list[str] | None = None
    metadata: dict[str, Any] | None = None
    sheets: list[SheetConfig] = []


class WorkbookUpdate(BaseModel):
    model_config = _api_config()
    name: str | None = PydanticField(default=None, min_length=1, max_length=200)
    labels: list[str] | None = None
    metadata: dict[str, Any] | None = None
    sheets: list[SheetConfig] | None = PydanticField(
        default=None, description="Sheets to add (a new slug) or reconfigure (a known slug)."
    )


class SheetBase(DataModel):
    workbook_id: str = Field(index=True, max_length=40)
    name: str = Field(max_length=200)
    slug: str = Field(max_length=200)
    config: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)


class Sheet(SheetBase, table=True):
    __tablename__ = "data_sheet"
    id: str = Field(primary_key=True, max_length=40)
    organization_id: str = Field(index=True, max_length=40)
    position: int = 0
    number: int | None = Field(default=None, unique=True, index=True)
    """Which range of row numbers the sheet's records get (``RANGE_BITS``); NULL for a sheet
    made before ranges, whose records are numbered below ``2**RANGE_BITS`` (``LEGACY_ROWS``)."""
    created_at: datetime = _ts()
    updated_at: datetime = _ts()

    @property
    def sheet_config(self) -> SheetConfig:
        return SheetConfig.model_validate(self.config)


class RecordCounts(BaseModel):
    model_config = _api_config()
    total: int
    valid: int
    error: int


class SheetPublic(SheetBase):
    model_config = API
    id: str
    created_at: datetime
    updated_at: datetime
    record_counts: RecordCounts | None = None


class WorkbookPublic(BaseModel):
    """A workbook on the wire. (Not a SQLModel: ``metadata`` would clash with the table's.)"""

    model_config = _api_config()
    id: str
    name: str
    space_id: str | None = None
    environment_id: str | None = None
    labels: list[str] | None = None
    metadata: dict[str, Any] | None = None
    sheets: list[SheetPublic] = []
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, workbook: Workbook, sheets: list[SheetPublic]) -> WorkbookPublic:
        return cls(
            id=workbook.id,
            name=workbook.name,
            space_id=workbook.space_id,
            environment_id=workbook.environment_id,
            labels=workbook.labels,
            metadata=workbook.metadata_,
            sheets=sheets,
            created_at=workbook.created_at,
            updated_at=workbook.updated_at,
        )


# --------------------------------------------------------------------------- records

record_table = sa.Table(
    "data_record",
    DataModel.metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("sheet_id", sa.String(40), nullable=False),
    sa.Column("valid", sa.Boolean, nullable=False, default=True),
    sa.Column("values", sa.JSON, nullable=False),
    sa.Column("messages", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("metadata", sa.JSON(none_as_null=True), nullable=True),
    sa.Index(
        "ix_data_record_legacy_sheet_seq",
        "sheet_id",
        "seq",
        sqlite_where=sa.text(LEGACY_ROWS),
        postgresql_where=sa.text(LEGACY_ROWS),
    ),
)
"""One row per record: ``values`` maps field keys to plain values; ``messages`` maps the keys
of invalid cells to Flatfile's ``[{"type": "error", "message": ...}]`` (NULL when valid)."""

counter_table = sa.Table(
    "data_counter",
    DataModel.metadata,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
"""Highest numbers given: ``sheet`` the highest sheet number; a sheet's id the highest row
number of its range used (SQLite would otherwise give a deleted newest record's number to the
next one); ``record`` the highest row number of the sheets made before ranges, on SQLite."""

checkpoint_table = sa.Table(
    "data_checkpoint",
    DataModel.metadata,
    sa.Column("lineage_id", sa.String(40), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("organization_id", sa.String(40), nullable=False),
    sa.Column("state", sa.JSON, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False, default=utcnow),
)
"""Progress of an operation step, keyed by the run's lineage (stable across retries) and the
step's position; written in the same transaction as the rows it accounts for."""


class CellMessage(BaseModel):
    type: str = "error"
    message: str


class Cell(BaseModel):
    value: Any = None
    valid: bool | None = None
    messages: list[CellMessage] | None = None


class RecordPublic(BaseModel):
    model_config = _api_config()
    id: str
    values: dict[str, Cell]
    valid: bool | None = None
    metadata: dict[str, Any] | None = None


class RecordUpdate(BaseModel):
    model_config = _api_config(extra="allow")
    id: str
    values: dict[str, Any]
    metadata: dict[str, Any] | None = None


class RecordsPage(BaseModel):
    model_config = _api_config()
    records: list[RecordPublic]
    counts: RecordCounts | None = None
    total: int = 0


def cell_value(cell: Any) -> Any:
    """``{"value": v}`` (Flatfile's cell) or a bare value, as the plain value."""
    if isinstance(cell, dict):
        if "value" not in cell:
            raise ValidationError("values", "a cell is {'value': ...}")
        return cell["value"]
    return cell
