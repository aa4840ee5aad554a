"""The one settings object of prefect-jobs, read from ``PREFECT_JOBS_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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
