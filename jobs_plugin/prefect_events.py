"""Every job event, also as a Prefect event, so Prefect automations can react to jobs.

A catalog event ``job:<what>`` becomes the Prefect event ``prefect-jobs.job.<what>`` (for
example ``prefect-jobs.job.failed``) about the resource ``prefect-jobs.job.<job id>``, with the
run, the organization and (for a step's update) the workflow as related resources, and the
catalog event's payload. Its Prefect id is derived from the catalog event's id, so the same
event is never two Prefect events.

They are sent by the process that writes the event, after its commit, through Prefect's own
events worker (batched, off the writer's thread), when that process talks to a Prefect server
(``PREFECT_API_URL`` is set) and ``PREFECT_JOBS_PREFECT_EVENTS`` is on. Prefect's temporary
local server is not started for them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jobs_plugin.models import Event
from jobs_plugin.settings import get_settings

logger = logging.getLogger("prefect_jobs.prefect_events")
NAME_PREFIX = "prefect-jobs."
_ID_NAMESPACE = uuid.UUID("7b0e7d55-0d0c-4b35-9b4f-5f1a3c0e2a11")


def event_name(topic: str) -> str:
    """``job:completed`` -> ``prefect-jobs.job.completed``."""
    return NAME_PREFIX + topic.replace(":", ".")


def resource_of(event: Event) -> dict[str, str]:
    return {
        "prefect.resource.id": f"prefect-jobs.job.{event.job_id}",
        "prefect.resource.role": "job",
        "prefect-jobs.organization-id": event.organization_id,
    }


def related_of(event: Event) -> list[dict[str, str]]:
    related = [
        {
            "prefect.resource.id": f"prefect-jobs.organization.{event.organization_id}",
            "prefect.resource.role": "organization",
        }
    ]
    if event.run_id:
        related.append(
            {
                "prefect.resource.id": f"prefect-jobs.run.{event.run_id}",
                "prefect.resource.role": "run",
            }
        )
    workflow = (event.payload or {}).get("workflow")
    if isinstance(workflow, dict) and workflow.get("id"):
        related.append(
            {
                "prefect.resource.id": f"prefect-jobs.workflow.{workflow['id']}",
                "prefect.resource.role": "workflow",
            }
        )
    return related


def prefect_event_id(event: Event) -> uuid.UUID:
    return uuid.uuid5(_ID_NAMESPACE, event.id)


def enabled() -> bool:
    """Whether this process sends Prefect events: the setting is on and a Prefect server is
    configured (never a reason to start Prefect's temporary local server)."""
    if not get_settings().prefect_events:
        return False
    from prefect.settings import PREFECT_API_URL

    return isinstance(PREFECT_API_URL.value(), str)


def emit(events: Sequence[Any]) -> None:
    """Send ``events`` (catalog ``Event`` rows just committed) as Prefect events."""
    if not events or not enabled():
        return
    from prefect.events import emit_event

    for event in events:
        occurred: datetime | None = event.created_at
        emit_event(
            event=event_name(event.topic),
            resource=resource_of(event),
            related=related_of(event),
            payload={"topic": event.topic, "sequence": event.sequence, **(event.payload or {})},
            occurred=occurred,
            id=prefect_event_id(event),
        )
