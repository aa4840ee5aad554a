"""Fixtures of the data store tests: a fresh catalog and home folder (so a fresh data store
and file folder) per test, and helpers to run the operation jobs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobs_plugin as jp
from jobs_plugin.data import api as data
from jobs_plugin.data import store
from jobs_plugin.models import JobRunPublic

DATA = Path(__file__).parent.parent / "data"


@pytest.fixture
def home(catalog_url: str) -> Iterator[str]:
    """The test's catalog; the data store is ``data.db`` in the test's home folder."""
    yield catalog_url
    store.dispose_all()


def run_operation(
    operation: str,
    source: str,
    *,
    type: str,
    destination: str | None = None,
    config: dict[str, Any] | None = None,
    organization: str | None = None,
) -> JobRunPublic:
    """Create a job with ``operation`` and run it to the end."""
    job = jp.create_job(
        name=f"{operation} {source}",
        type=type,
        operation=operation,
        source=source,
        destination=destination,
        config=config,
        organization=organization,
    )
    return jp.execute(job.id, organization=organization)


def values(sheet_id: str, **query: Any) -> list[dict[str, Any]]:
    """Every record's plain values, in row order (page after page)."""
    found: list[dict[str, Any]] = []
    number = 1
    while True:
        page = data.get_records(sheet_id, page_number=number, **query)
        found += [{k: c.value for k, c in r.values.items()} for r in page.records]
        if len(page.records) < data.MAX_PAGE_SIZE:
            return found
        number += 1


def upload(name: str, content: bytes | str, **kwargs: Any) -> str:
    raw = content.encode("utf-8") if isinstance(content, str) else content
    return data.upload_file(raw, name=name, **kwargs).id
