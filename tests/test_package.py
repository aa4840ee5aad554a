"""The package as Prefect and users see it: entry point, public API, settings."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

import jobs_plugin
from jobs_plugin.settings import Settings


def test_declared_as_a_prefect_collection() -> None:
    found = [ep for ep in entry_points(group="prefect.collections") if ep.name == "prefect_jobs"]
    assert len(found) == 1
    assert found[0].load() is jobs_plugin


def test_prefect_loads_the_collection() -> None:
    from prefect.plugins import load_prefect_collections

    loaded = load_prefect_collections()
    assert loaded.get("prefect_jobs") is jobs_plugin


def test_public_api_is_sorted_and_importable() -> None:
    names = jobs_plugin.__all__
    assert names == sorted(names)
    missing = [name for name in names if not hasattr(jobs_plugin, name)]
    assert missing == []


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_JOBS_DATABASE_URL", raising=False)
    monkeypatch.setenv("PREFECT_JOBS_HOME", "/srv/jobs")
    monkeypatch.setenv("PREFECT_JOBS_CANCEL_POLL_SECONDS", "0.5")
    settings = Settings()
    assert settings.resolved_database_url == "sqlite:////srv/jobs/catalog.db"
    assert settings.cancel_poll_seconds == 0.5
    monkeypatch.setenv("PREFECT_JOBS_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert Settings().resolved_database_url == "postgresql+psycopg://u@h/db"


def test_invalid_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("PREFECT_JOBS_CANCEL_POLL_SECONDS", "0")
    with pytest.raises(ValidationError, match="cancel_poll_seconds"):
        Settings()
