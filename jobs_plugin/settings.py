"""The one settings object of prefect-jobs, read from ``PREFECT_JOBS_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of the catalog and the engine.

    Every field can be set with an environment variable named ``PREFECT_JOBS_<FIELD>``.
    """

    model_config = SettingsConfigDict(env_prefix="PREFECT_JOBS_", extra="ignore")

    home: Path = Field(
        default=Path("~/.prefect-jobs"),
        description="Folder holding the embedded catalog database and other local state.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the catalog. Default: a SQLite file `catalog.db` under `home`. "
            "PostgreSQL: `postgresql+psycopg://user@host:5432/dbname`."
        ),
    )
    data_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the data store (files, workbooks, sheets and records). Default: "
            "a SQLite file `data.db` under `home`."
        ),
    )
    native_csv: bool = Field(
        default=True,
        description=(
            "Read and write CSV/TSV files with Apache Arrow (the `arrow` extra) when it is "
            "installed: the same records and bytes, several times faster. `false`: always "
            "Python's csv module."
        ),
    )
    files_url: str | None = Field(
        default=None,
        description="Where uploaded and exported file bytes live (a folder or an fsspec URL). "
        "Default: the folder `files` under `home`.",
    )
    api_host: str = Field(default="127.0.0.1", description="Address the REST API listens on.")
    api_port: int = Field(default=4300, ge=0, le=65535, description="Port of the REST API.")
    prefect_port: int = Field(
        default=4200,
        ge=1,
        le=65535,
        description="Port of the Prefect server and UI that `prefect-jobs up` starts.",
    )
    work_pool: str = Field(
        default="jobs",
        min_length=1,
        description=(
            "The process work pool `prefect-jobs up` creates, puts the job-runner deployment "
            "on and starts its workers for; `workflows deploy` puts workflows on it."
        ),
    )
    webhook_dispatch: bool = Field(
        default=True,
        description="Whether the REST API server also sends webhook deliveries.",
    )
    webhook_max_attempts: int = Field(
        default=10, ge=1, description="Attempts per webhook delivery before it is given up."
    )
    webhook_backoff_seconds: float = Field(
        default=1.0, gt=0, description="Wait before the first retry of a delivery; doubles after."
    )
    webhook_backoff_max_seconds: float = Field(
        default=300.0, gt=0, description="Longest wait between two attempts of a delivery."
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long one delivery attempt may take."
    )
    execute_via: Literal["auto", "thread", "deployment"] = Field(
        default="auto",
        description=(
            "Where a non-blocking execute runs: `thread` (a thread of the calling process), "
            "`deployment` (a flow run of the job-runner deployment, for its runner or "
            "workers) or `auto` (the deployment when the Prefect server has it)."
        ),
    )
    heartbeat_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often the process running a job run records that it is alive.",
    )
    crash_after_seconds: float = Field(
        default=20.0,
        gt=0,
        description=(
            "A run not heard of for this long (no heartbeat) is ended FAILED as crashed by the "
            "reconciler."
        ),
    )
    reconcile_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How often the REST API server reconciles unfinished runs (0: never).",
    )
    prefect_events: bool = Field(
        default=True,
        description=(
            "Also send every job event as a Prefect event (`prefect-jobs.job.completed`...) "
            "when a Prefect server is configured, for Prefect automations."
        ),
    )
    prefect_artifacts: bool = Field(
        default=True,
        description="Show each run's progress, plan and outcome as artifacts in the Prefect UI.",
    )
    api_key_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        description=(
            "How long a server trusts an API key it found active without asking the catalog "
            "again: a key revoked by another process stops working within this time (0: ask "
            "on every request)."
        ),
    )
    idempotency_ttl_seconds: float = Field(
        default=24 * 3600.0, gt=0, description="How long an `Idempotency-Key` is remembered."
    )
    default_organization: str = Field(
        default="default",
        description="Name of the organization used when a caller names none.",
    )
    workflow_modules: list[str] = Field(
        default=["flows"],
        description="Python modules imported on first use; workflows they declare are registered.",
    )
    cancel_poll_seconds: float = Field(
        default=0.25,
        gt=0,
        description="How often a running job checks whether a cancel was requested.",
    )
    progress_event_seconds: float = Field(
        default=0.25,
        ge=0,
        description="Minimum interval between two `job:updated` events of one run.",
    )
    event_poll_seconds: float = Field(
        default=0.1,
        gt=0,
        description="How often an event subscription polls the catalog for new events.",
    )
    stream_poll_seconds: float = Field(
        default=0.05,
        gt=0,
        description="How often the REST API's live event stream looks for new events.",
    )
    sqlite_busy_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a SQLite writer waits for the lock before failing.",
    )

    @property
    def home_path(self) -> Path:
        return self.home.expanduser()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home_path / 'catalog.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
