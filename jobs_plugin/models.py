"""Catalog tables and the API schemas around them, split the way SQLModel's docs do.

For each entity: ``XBase`` (shared fields), ``X(table=True)``, ``XCreate``, ``XUpdate`` (all
optional) and ``XPublic``. API schemas speak camelCase on the wire and accept snake_case in
Python (``populate_by_name``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from pydantic import (
    BaseModel,
    ConfigDict,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic import (
    Field as PydanticField,
)
from pydantic.alias_generators import to_camel
from sqlmodel import Field, SQLModel

from jobs_plugin.errors import ValidationError
from jobs_plugin.translation import JobStatus, WorkflowRunStatus

T = TypeVar("T")
U = TypeVar("U")
WORKFLOW_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,99}$")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


def _ts(nullable: bool = False, index: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_type=UTCDateTime, nullable=True, index=index)
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False, index=index)


def _json(name: str | None = None) -> Any:
    column = sa.Column(name, sa.JSON, nullable=True) if name else sa.Column(sa.JSON, nullable=True)
    return Field(default=None, sa_column=column)


def _enum(enum: type[Enum], length: int = 20) -> Any:
    """A VARCHAR column that gives the enum back on load (SQLModel does not coerce)."""
    return sa.Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda e: [m.value for m in e],
    )


def _api_config(**extra: Any) -> Any:
    """camelCase on the wire, snake_case accepted in Python. (Typed ``Any``: SQLModel declares
    ``model_config`` with its own TypedDict.)"""
    config: dict[str, Any] = {"alias_generator": to_camel, "populate_by_name": True, **extra}
    return ConfigDict(**config)  # type: ignore[typeddict-item]


API_CONFIG = _api_config(from_attributes=True)


class JobType(str, Enum):
    FILE = "file"
    WORKBOOK = "workbook"
    SHEET = "sheet"


class Operation(str, Enum):
    EXTRACT = "extract"
    MAP = "map"
    DELETE = "delete"
    EXPORT = "export"


# Which job types each operation acts on (the seed's four kinds of jobs).
OPERATION_TYPES: dict[Operation, frozenset[JobType]] = {
    Operation.EXTRACT: frozenset({JobType.FILE}),
    Operation.MAP: frozenset({JobType.WORKBOOK, JobType.SHEET}),
    Operation.DELETE: frozenset({JobType.WORKBOOK, JobType.SHEET}),
    Operation.EXPORT: frozenset({JobType.WORKBOOK, JobType.SHEET}),
}


class Trigger(str, Enum):
    MANUAL = "manual"
    IMMEDIATE = "immediate"


class Isolation(str, Enum):
    INLINE = "inline"
    """In the job's own process, as a subflow."""
    PROCESS = "process"
    """In a fresh Python process of the job's machine, as a subflow."""
    DEPLOYMENT = "deployment"
    """As a flow run of the workflow's Prefect deployment, on whatever worker serves its work
    pool (``run_deployment(..., as_subflow=True)``)."""


class Overlap(str, Enum):
    """What happens to a run of a job's deployment that would exceed ``maxConcurrentRuns``."""

    SKIP = "skip"
    """It is not run: Prefect cancels it (collision strategy ``CANCEL_NEW``)."""
    QUEUE = "queue"
    """It waits until a running one ends (collision strategy ``ENQUEUE``)."""


# --------------------------------------------------------------------------- organization


class OrganizationBase(SQLModel):
    name: str = Field(index=True, unique=True, max_length=200)


class Organization(OrganizationBase, table=True):
    id: str = Field(primary_key=True, max_length=40)
    created_at: datetime = _ts()


class OrganizationPublic(OrganizationBase):
    model_config = API_CONFIG
    id: str
    created_at: datetime


# --------------------------------------------------------------------------- workflow


class WorkflowBase(SQLModel):
    name: str = Field(max_length=200)
    description: str | None = None
    entrypoint: str = Field(
        max_length=500,
        description="`path/to/file.py:flow_name` or `package.module:flow_name`.",
    )
    isolation: Isolation = Field(default=Isolation.INLINE, sa_type=_enum(Isolation))
    deployment: str | None = Field(
        default=None,
        max_length=300,
        description=(
            "`flow name/deployment name` of the Prefect deployment a `deployment`-isolated "
            "workflow runs as. Default: `<flow name>/<workflow id>`, which "
            "`prefect-jobs workflows deploy` creates."
        ),
    )
    retries: int = Field(default=0, ge=0)
    retry_delay_seconds: float = Field(default=0, ge=0)
    timeout_seconds: float | None = Field(default=None, gt=0)


class Workflow(WorkflowBase, table=True):
    id: str = Field(primary_key=True, max_length=100)
    organization_id: str | None = Field(
        default=None, foreign_key="organization.id", index=True, max_length=40
    )
    parameter_schema: dict[str, Any] | None = _json()
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class WorkflowCreate(WorkflowBase):
    model_config = API_CONFIG
    id: str

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not WORKFLOW_ID_PATTERN.match(value):
            raise ValueError(
                "must be 1-100 characters of a-z, 0-9, '.', '_' or '-', starting with a letter "
                "or digit"
            )
        return value


class WorkflowPublic(WorkflowBase):
    model_config = API_CONFIG
    id: str
    organization_id: str | None
    parameter_schema: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


# --------------------------------------------------------------------------- job config


class StepSpec(SQLModel):
    """One entry of `workflowExecutionOrder`: a workflow id with optional per-step settings.

    On the wire an entry is either the bare workflow id (Anon's shape) or an object.
    """

    model_config = _api_config(extra="forbid")

    workflow_id: str
    parameters: dict[str, Any] = PydanticField(default_factory=dict)
    isolation: Isolation | None = None
    retries: int | None = PydanticField(default=None, ge=0)
    retry_delay_seconds: float | None = PydanticField(default=None, ge=0)
    timeout_seconds: float | None = PydanticField(default=None, gt=0)

    @model_serializer(mode="wrap")
    def _compact(self, handler: Any) -> Any:
        data = handler(self)
        rest = {k: v for k, v in data.items() if k not in ("workflowId", "workflow_id")}
        if all(v in (None, {}) for v in rest.values()):
            return self.workflow_id
        return {k: v for k, v in data.items() if v not in (None, {})}


class JobConfigJson(SQLModel):
    model_config = _api_config(extra="allow")

    workflow_execution_order: list[StepSpec] = PydanticField(default_factory=list)

    @field_validator("workflow_execution_order", mode="before")
    @classmethod
    def _ids_to_steps(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"workflowId": v} if isinstance(v, str) else v for v in value]
        return value


# --------------------------------------------------------------------------- schedule


MAX_INTERVAL_SECONDS = 366 * 24 * 3600.0


class JobScheduleBase(SQLModel):
    """When a job runs by itself: a cron expression or an interval, in a timezone. Kept by
    Prefect as a schedule of the job's deployment (see ``jobs_plugin.prefect_deployments``)."""

    cron: str | None = Field(
        default=None, max_length=100, description="A cron expression, e.g. `0 6 * * *`."
    )
    interval_seconds: float | None = Field(
        default=None,
        ge=1,
        le=MAX_INTERVAL_SECONDS,
        description="Run every this many seconds (instead of `cron`).",
    )
    timezone: str = Field(
        default="UTC", max_length=64, description="IANA name, e.g. `Europe/Berlin`."
    )
    active: bool = Field(default=True, description="False: paused.")


class JobSchedule(JobScheduleBase, table=True):
    __tablename__ = "job_schedule"
    id: str = Field(primary_key=True, max_length=40)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=40)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


def _valid_cron(value: str | None) -> str | None:
    """A cron expression Prefect's ``CronSchedule`` accepts."""
    if value is None:
        return value
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=value, timezone="UTC")
    except Exception:
        raise ValueError(f"{value!r} is not a valid cron expression") from None
    return value


def _valid_timezone(value: str | None) -> str | None:
    """An IANA timezone name (``Europe/Berlin``, ``UTC``)."""
    if value is None:
        return value
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(value)
    except Exception:
        raise ValueError(f"{value!r} is not a known IANA timezone") from None
    return value


class JobScheduleCreate(JobScheduleBase):
    model_config = _api_config(extra="forbid")

    _cron = field_validator("cron")(_valid_cron)
    _timezone = field_validator("timezone")(_valid_timezone)

    @model_validator(mode="after")
    def _one_kind(self) -> JobScheduleCreate:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give exactly one of `cron` and `intervalSeconds`")
        return self


class JobScheduleUpdate(SQLModel):
    """Partial update of a schedule (``active: false`` pauses it)."""

    model_config = _api_config(extra="forbid")
    cron: str | None = PydanticField(default=None, max_length=100)
    interval_seconds: float | None = PydanticField(default=None, ge=1, le=MAX_INTERVAL_SECONDS)
    timezone: str | None = PydanticField(default=None, max_length=64)
    active: bool | None = None

    _cron = field_validator("cron")(_valid_cron)
    _timezone = field_validator("timezone")(_valid_timezone)


class JobSchedulePublic(JobScheduleBase):
    model_config = API_CONFIG
    id: str
    job_id: str
    created_at: datetime
    updated_at: datetime


# --------------------------------------------------------------------------- job


MAX_VERSION = 2**31 - 1
"""The highest job version any call accepts (a database integer)."""
WORKFLOW_JOB_TYPE = "space"
"""``type`` of a job without one (it runs its ``workflowExecutionOrder``) on Flatfile's wire."""
WORKFLOW_JOB_OPERATION = "workflows"
"""``operation`` of a job without one on Flatfile's wire."""
MAX_CONCURRENT_RUNS = 1000
UNKNOWN_ACTOR = "unknown"
"""``createdBy`` of a job whose creator was not recorded."""


class JobBase(SQLModel):
    name: str = Field(min_length=1, max_length=200)
    source_provider: str | None = Field(default=None, max_length=200)
    type: JobType | None = Field(default=None, sa_type=_enum(JobType))
    operation: Operation | None = Field(default=None, sa_type=_enum(Operation, 40))
    source: str | None = Field(default=None, max_length=200)
    destination: str | None = Field(default=None, max_length=200)
    trigger: Trigger = Field(default=Trigger.MANUAL, sa_type=_enum(Trigger))
    managed: bool = Field(
        default=True,
        description=(
            "True: the engine runs the job's workflows. False: the caller does the work and "
            "reports it (`/ack`, `/complete`, `/fail`), as with Flatfile's unmanaged jobs."
        ),
    )
    max_concurrent_runs: int | None = Field(
        default=1,
        ge=1,
        le=MAX_CONCURRENT_RUNS,
        description=(
            "How many runs of the job its Prefect deployment (a job with schedules has one) "
            "runs at once; null: no limit. The default 1 keeps scheduled runs from overlapping."
        ),
    )
    overlap: Overlap = Field(
        default=Overlap.SKIP,
        sa_type=_enum(Overlap),
        description=(
            "A deployment run beyond `maxConcurrentRuns`: `skip` (Prefect cancels it) or "
            "`queue` (it waits for a running one to end)."
        ),
    )


class Job(JobBase, table=True):
    id: str = Field(primary_key=True, max_length=40)
    organization_id: str = Field(foreign_key="organization.id", index=True, max_length=40)
    job_config_json: dict[str, Any] | None = _json()
    config: dict[str, Any] | None = _json()
    input: dict[str, Any] | None = _json()
    job_metadata: dict[str, Any] | None = _json("metadata")
    version: int = Field(default=1)
    status: JobStatus = Field(default=JobStatus.READY, sa_type=_enum(JobStatus), index=True)
    last_run_id: str | None = Field(default=None, max_length=40)
    created_by: str | None = Field(default=None, max_length=200)
    updated_by: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    deleted_at: datetime | None = _ts(nullable=True)


class JobCreate(JobBase):
    model_config = API_CONFIG
    name: str | None = Field(  # type: ignore[assignment]
        default=None,
        min_length=1,
        max_length=200,
        description="Required unless the job has an `operation` (then it defaults to one).",
    )
    job_config_json: JobConfigJson = PydanticField(default_factory=JobConfigJson)
    config: dict[str, Any] | None = None
    input: dict[str, Any] | None = None
    job_metadata: dict[str, Any] | None = PydanticField(default=None, alias="metadata")
    schedules: list[JobScheduleCreate] = PydanticField(
        default_factory=list,
        description="When the job runs by itself (cron or interval); not versioned.",
    )


class JobUpdate(SQLModel):
    """Partial update; every field is optional and only the ones set are applied."""

    model_config = API_CONFIG
    name: str | None = PydanticField(default=None, min_length=1, max_length=200)
    source_provider: str | None = None
    type: JobType | None = None
    operation: Operation | None = None
    source: str | None = None
    destination: str | None = None
    trigger: Trigger | None = None
    managed: bool | None = None
    max_concurrent_runs: int | None = PydanticField(
        default=None, ge=1, le=MAX_CONCURRENT_RUNS, description="null: no limit."
    )
    overlap: Overlap | None = None
    job_config_json: JobConfigJson | None = None
    config: dict[str, Any] | None = None
    input: dict[str, Any] | None = None
    job_metadata: dict[str, Any] | None = PydanticField(default=None, alias="metadata")
    schedules: list[JobScheduleCreate] | None = PydanticField(
        default=None,
        description="Replaces all of the job's schedules (`[]` removes them). Not versioned.",
    )
    version: int | None = PydanticField(
        default=None,
        ge=1,
        le=MAX_VERSION,
        description=(
            "The version this change was made from (as `If-Match` does): if the job has moved "
            "on since, nothing is changed and the answer is 409."
        ),
    )


class JobAck(SQLModel):
    """``POST /jobs/{id}/ack`` of a job its caller runs (``managed: false``)."""

    model_config = API_CONFIG
    info: str | None = PydanticField(default=None, max_length=2000)
    progress: int | None = PydanticField(default=None, ge=0, le=100)
    estimated_completion_at: datetime | None = None


class JobOutcomeReport(SQLModel):
    """``POST /jobs/{id}/complete`` or ``/fail`` of a job its caller runs."""

    model_config = API_CONFIG
    outcome: dict[str, Any] | None = None
    info: str | None = PydanticField(default=None, max_length=2000)


class JobCancelReport(SQLModel):
    model_config = API_CONFIG
    info: str | None = PydanticField(default=None, max_length=2000)


class JobSplit(SQLModel):
    """``POST /jobs/{id}/split``: how many parts the current run of a caller-run job has."""

    model_config = API_CONFIG
    parts: int = PydanticField(ge=1, le=1_000_000)
    run_in_parallel: bool | None = None


class JobPublic(JobBase):
    model_config = API_CONFIG
    id: str
    organization_id: str
    job_config_json: JobConfigJson
    config: dict[str, Any] | None = None
    input: dict[str, Any] | None = None
    job_metadata: dict[str, Any] | None = PydanticField(default=None, alias="metadata")
    version: int
    status: JobStatus
    last_run_id: str | None = None
    created_by: str | None = None
    updated_by: str | None = None
    created_at: datetime
    updated_at: datetime
    schedules: list[JobSchedulePublic] = PydanticField(default_factory=list)
    prefect_deployment: str | None = PydanticField(
        default=None,
        description="The job's Prefect deployment (`flow/deployment`), when it has schedules.",
    )


class JobVersion(SQLModel, table=True):
    """Every configuration a job has had; runs point at the version they ran."""

    __tablename__ = "job_version"
    __table_args__ = (sa.UniqueConstraint("job_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=40)
    version: int
    snapshot: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    created_by: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts()


class JobVersionPublic(SQLModel):
    model_config = API_CONFIG
    job_id: str
    version: int
    snapshot: dict[str, Any]
    created_by: str | None
    created_at: datetime


# --------------------------------------------------------------------------- runs


class JobRunBase(SQLModel):
    status: JobStatus = Field(default=JobStatus.PLANNING, sa_type=_enum(JobStatus), index=True)
    parts: int = Field(default=0, ge=0)
    processed: int = Field(default=0, ge=0)
    progress: int = Field(default=0, ge=0, le=100)
    info: str | None = None
    attempt: int = Field(default=1, ge=1)
    job_version: int
    start_position: int = Field(default=0, ge=0)


class JobRun(JobRunBase, table=True):
    __tablename__ = "job_run"
    id: str = Field(primary_key=True, max_length=40)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=40)
    organization_id: str = Field(foreign_key="organization.id", index=True, max_length=40)
    snapshot: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    outcome: dict[str, Any] | None = _json()
    retry_of: str | None = Field(default=None, max_length=40)
    prefect_flow_run_id: str | None = Field(default=None, max_length=40, index=True)
    cancel_requested_at: datetime | None = _ts(nullable=True)
    outcome_acknowledged_at: datetime | None = _ts(nullable=True)
    heartbeat_at: datetime | None = _ts(nullable=True)

    @property
    def last_sign_of_life(self) -> datetime:
        """Its heartbeat, else its start, else its creation: what crash detection goes by
        (``catalog.stale_runs`` says the same in SQL)."""
        return self.heartbeat_at or self.started_at or self.created_at

    created_by: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    started_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)


class WorkflowRunBase(SQLModel):
    position: int = Field(ge=0)
    workflow_id: str = Field(max_length=100)
    name: str = Field(max_length=200)
    isolation: Isolation = Field(sa_type=_enum(Isolation))
    status: WorkflowRunStatus = Field(
        default=WorkflowRunStatus.PENDING, sa_type=_enum(WorkflowRunStatus)
    )
    parts: int = Field(default=1, ge=0)
    processed: int = Field(default=0, ge=0)
    error: str | None = None


class WorkflowRun(WorkflowRunBase, table=True):
    __tablename__ = "workflow_run"
    __table_args__ = (sa.UniqueConstraint("run_id", "position"),)
    id: str = Field(primary_key=True, max_length=40)
    run_id: str = Field(foreign_key="job_run.id", index=True, max_length=40)
    prefect_flow_run_id: str | None = Field(default=None, max_length=40)
    reused_from: str | None = Field(
        default=None,
        max_length=40,
        description="Workflow run of an earlier attempt whose success this step carries over.",
    )
    started_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)


class WorkflowRunPublic(WorkflowRunBase):
    model_config = API_CONFIG
    id: str
    run_id: str
    prefect_flow_run_id: str | None
    reused_from: str | None
    started_at: datetime | None
    finished_at: datetime | None
    prefect_url: str | None = PydanticField(
        default=None, description="The workflow's flow run in the Prefect UI."
    )


class JobRunPublic(JobRunBase):
    model_config = API_CONFIG
    id: str
    job_id: str
    organization_id: str
    outcome: dict[str, Any] | None
    retry_of: str | None
    prefect_flow_run_id: str | None
    cancel_requested_at: datetime | None
    outcome_acknowledged_at: datetime | None = None
    heartbeat_at: datetime | None = PydanticField(
        default=None, description="Last sign of life of the process running the run."
    )
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    prefect_url: str | None = PydanticField(
        default=None, description="The job's flow run in the Prefect UI."
    )
    workflow_runs: list[WorkflowRunPublic] = PydanticField(default_factory=list)


# --------------------------------------------------------------------------- events


class EventBase(SQLModel):
    topic: str = Field(max_length=60, index=True)
    domain: str = Field(default="job", max_length=40)
    job_id: str = Field(max_length=40, index=True)
    run_id: str | None = Field(default=None, max_length=40, index=True)
    sequence: int = Field(ge=0, description="Order of the event within its run (or job, if none).")


class Event(EventBase, table=True):
    __table_args__ = (sa.UniqueConstraint("job_id", "run_id", "sequence"),)
    cursor: int | None = Field(
        default=None,
        primary_key=True,
        description="Catalog-wide order of events; what live streams resume from.",
    )
    id: str = Field(max_length=40, unique=True, index=True)
    organization_id: str = Field(foreign_key="organization.id", index=True, max_length=40)
    context: dict[str, Any] | None = _json()
    payload: dict[str, Any] | None = _json()
    created_at: datetime = _ts(index=True)
    acknowledged_at: datetime | None = _ts(nullable=True)
    acknowledged_by: str | None = Field(default=None, max_length=200)


class EventPublic(EventBase):
    model_config = API_CONFIG
    id: str
    cursor: int
    organization_id: str
    context: dict[str, Any] | None
    payload: dict[str, Any] | None
    created_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None


# --------------------------------------------------------------------------- pages


MAX_PAGE_NUMBER = 1_000_000
"""The highest page number any list accepts (an offset past it would overflow a database)."""
MAX_PAGE_SIZE = 1000


def check_page(page_number: int, page_size: int, max_size: int = MAX_PAGE_SIZE) -> None:
    """A ``ValidationError`` naming ``pageNumber`` or ``pageSize`` if either is out of range."""
    if not 1 <= page_number <= MAX_PAGE_NUMBER:
        raise ValidationError("pageNumber", f"must be from 1 to {MAX_PAGE_NUMBER}")
    if not 1 <= page_size <= max_size:
        raise ValidationError("pageSize", f"must be from 1 to {max_size}")


class Page(BaseModel, Generic[T]):
    """One page of a list: the items plus what a caller needs to ask for the next."""

    model_config = API_CONFIG
    items: list[T]
    total: int
    page_number: int
    page_size: int

    def map(self, fn: Callable[[T], U]) -> Page[U]:
        """The same page with every item converted (table rows to public schemas)."""
        return Page[U](
            items=[fn(item) for item in self.items],
            total=self.total,
            page_number=self.page_number,
            page_size=self.page_size,
        )

    @property
    def page_count(self) -> int:
        return max(1, -(-self.total // self.page_size)) if self.page_size else 1


# --------------------------------------------------------------------------- API keys


class ApiKeyBase(SQLModel):
    name: str | None = Field(default=None, max_length=200)
    prefix: str = Field(max_length=16, description="The secret's first 8 characters.")


class ApiKey(ApiKeyBase, table=True):
    """An API key. Only the sha256 of the secret is kept: secrets are 32 random bytes from
    ``secrets.token_urlsafe``, far beyond brute force, so a fast unsalted hash suffices (a slow
    password hash would only slow down every request)."""

    __tablename__ = "api_key"
    id: str = Field(primary_key=True, max_length=40)
    organization_id: str = Field(foreign_key="organization.id", index=True, max_length=40)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = _ts()
    last_used_at: datetime | None = _ts(nullable=True)
    revoked_at: datetime | None = _ts(nullable=True)


class ApiKeyPublic(ApiKeyBase):
    model_config = API_CONFIG
    id: str
    organization_id: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


# --------------------------------------------------------------------------- webhooks


class DeliveryStatus(str, Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """Given up after ``webhook_max_attempts``; can be retried by hand."""


class WebhookBase(SQLModel):
    url: str = Field(max_length=2000)
    topics: list[str] | None = Field(
        default=None,
        sa_column=sa.Column(sa.JSON, nullable=True),
        description="Topics to deliver (e.g. `job:completed`); none: every topic.",
    )
    description: str | None = Field(default=None, max_length=500)
    active: bool = True


class Webhook(WebhookBase, table=True):
    id: str = Field(primary_key=True, max_length=40)
    organization_id: str = Field(foreign_key="organization.id", index=True, max_length=40)
    secret: str = Field(max_length=200, description="Signs deliveries (HMAC-SHA256).")
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class WebhookCreate(WebhookBase):
    model_config = API_CONFIG
    secret: str | None = PydanticField(
        default=None,
        min_length=16,
        max_length=200,
        description="Signing secret; one is generated (and shown once) when none is given.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^\s/]+", url):
            raise ValueError("must be an http:// or https:// URL")
        return url

    @field_validator("topics")
    @classmethod
    def _known_topics(cls, topics: list[str] | None) -> list[str] | None:
        if topics is None:
            return None
        unknown = [t for t in topics if not re.match(r"^[a-z]+:[a-z\-]+$", t)]
        if unknown:
            raise ValueError(f"not topics: {unknown} (expected e.g. 'job:completed')")
        return sorted(set(topics))


class WebhookUpdate(SQLModel):
    model_config = API_CONFIG
    url: str | None = None
    topics: list[str] | None = None
    description: str | None = None
    active: bool | None = None


class WebhookPublic(WebhookBase):
    model_config = API_CONFIG
    id: str
    organization_id: str
    created_at: datetime
    updated_at: datetime


class WebhookDeliveryBase(SQLModel):
    webhook_id: str = Field(foreign_key="webhook.id", index=True, max_length=40)
    event_id: str = Field(max_length=40)
    event_cursor: int
    topic: str = Field(max_length=60)
    ordering_key: str = Field(
        max_length=40, description="Deliveries with one key (the job) go in order."
    )
    status: DeliveryStatus = Field(
        default=DeliveryStatus.PENDING, sa_type=_enum(DeliveryStatus), index=True
    )
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=1000)


class WebhookDelivery(WebhookDeliveryBase, table=True):
    __tablename__ = "webhook_delivery"
    __table_args__ = (
        sa.Index("ix_webhook_delivery_order", "webhook_id", "ordering_key", "event_cursor"),
    )
    id: str = Field(primary_key=True, max_length=40)
    organization_id: str = Field(foreign_key="organization.id", index=True, max_length=40)
    next_attempt_at: datetime = _ts(index=True)
    lease_until: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    delivered_at: datetime | None = _ts(nullable=True)


class WebhookDeliveryPublic(WebhookDeliveryBase):
    model_config = API_CONFIG
    id: str
    next_attempt_at: datetime
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


# --------------------------------------------------------------------------- idempotency


class IdempotencyRecord(SQLModel, table=True):
    """The first response to a request sent with an ``Idempotency-Key`` header."""

    __tablename__ = "idempotency_record"
    organization_id: str = Field(primary_key=True, max_length=40)
    key: str = Field(primary_key=True, max_length=200)
    fingerprint: str = Field(max_length=64, description="sha256 of method, path and body.")
    status_code: int | None = None
    response: dict[str, Any] | None = _json()
    headers: dict[str, Any] | None = _json()
    created_at: datetime = _ts(index=True)
    completed_at: datetime | None = _ts(nullable=True)
