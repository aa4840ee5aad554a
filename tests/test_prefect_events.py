"""Job events reach Prefect as Prefect events (for automations), read back from the session's
real Prefect server."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventResourceFilter
from prefect.utilities.asyncutils import run_coro_as_sync

import jobs_plugin as jp
from jobs_plugin import prefect_events


def _prefect_events(resource_id: str) -> list[Any]:
    async def read() -> list[Any]:
        async with get_client() as client:
            page = await client.read_events(
                EventFilter(resource=EventResourceFilter(id=[resource_id])), limit=50
            )
            return list(page.events)

    return run_coro_as_sync(read())


def _wait_for_events(resource_id: str, count: int, timeout: float = 60) -> list[Any]:
    """Prefect persists events in batches (every few seconds): poll until ``count`` arrived."""
    deadline = time.monotonic() + timeout
    while True:
        events = _prefect_events(resource_id)
        if len(events) >= count or time.monotonic() > deadline:
            return sorted(events, key=lambda e: e.occurred)
        time.sleep(0.5)


def test_every_job_event_is_a_prefect_event(catalog_url: str) -> None:
    job = jp.create_job(name="announced", job_config_json={"workflowExecutionOrder": ["test.noop"]})
    run = jp.execute(job.id)
    ours = jp.list_events(job_id=job.id)
    assert [e.topic for e in ours][-1] == "job:completed"

    theirs = _wait_for_events(f"prefect-jobs.job.{job.id}", len(ours))
    by_id = {str(e.id): e for e in theirs}
    assert len(by_id) == len(ours), [e.event for e in theirs]
    for event in ours:
        sent = by_id[str(prefect_events.prefect_event_id(event))]
        assert sent.event == "prefect-jobs." + event.topic.replace(":", ".")
        assert sent.resource.id == f"prefect-jobs.job.{job.id}"
        assert sent.payload["topic"] == event.topic
        related = {r.id: r.role for r in sent.related}
        assert related[f"prefect-jobs.organization.{event.organization_id}"] == "organization"
        if event.run_id:
            assert related[f"prefect-jobs.run.{run.id}"] == "run"
    completed = by_id[str(prefect_events.prefect_event_id(ours[-1]))]
    assert completed.event == "prefect-jobs.job.completed"
    assert completed.payload["status"] == "COMPLETED"
    step_updates = [
        by_id[str(prefect_events.prefect_event_id(e))]
        for e in ours
        if e.payload and "workflow" in e.payload
    ]
    assert step_updates and all(
        "prefect-jobs.workflow.test.noop" in {r.id for r in u.related} for u in step_updates
    )


def test_no_prefect_events_when_turned_off(
    catalog_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs_plugin.settings import get_settings

    monkeypatch.setenv("PREFECT_JOBS_PREFECT_EVENTS", "false")
    get_settings.cache_clear()
    assert not prefect_events.enabled()
    job = jp.create_job(name="quiet", job_config_json={"workflowExecutionOrder": ["test.noop"]})
    jp.execute(job.id)
    # the run's own Prefect flow-run events still flow; ours must not
    assert _wait_for_events(f"prefect-jobs.job.{job.id}", 1, timeout=8) == []


def test_event_names_and_resources() -> None:
    assert prefect_events.event_name("job:outcome-acknowledged") == (
        "prefect-jobs.job.outcome-acknowledged"
    )
