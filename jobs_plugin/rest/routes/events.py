"""``/events``: what happened to jobs, oldest first; and the live stream.

Listing pages either by cursor (pass the last event's ``cursor`` as ``after``) or, as Flatfile
does, by ``pageNumber``. As in Flatfile, acknowledged events are left out unless
``includeAcknowledged=true``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

import jobs_plugin as jp
from jobs_plugin.rest import stream
from jobs_plugin.rest.deps import EventId, OrganizationDep, PageSize
from jobs_plugin.rest.envelopes import SUCCESS, dump, one

router = APIRouter(prefix="/events", tags=["events"])
MAX_CURSOR = 2**63 - 1
"""Cursors are database integers."""
JobIdQuery = Annotated[str | None, Query(alias="jobId")]
RunIdQuery = Annotated[str | None, Query(alias="runId")]


@router.get("")
def list_events(
    organization: OrganizationDep,
    job_id: JobIdQuery = None,
    run_id: RunIdQuery = None,
    topic: str | None = None,
    domain: str | None = None,
    since: datetime | None = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_CURSOR, description="A cursor: events after it.")
    ] = None,
    include_acknowledged: Annotated[bool, Query(alias="includeAcknowledged")] = False,
    page_size: PageSize = 100,
    page_number: Annotated[int | None, Query(alias="pageNumber", ge=1, le=1_000_000)] = None,
) -> dict[str, Any]:
    filters: dict[str, Any] = {
        "job_id": job_id,
        "run_id": run_id,
        "topic": topic,
        "domain": domain,
        "since": since,
        "after": after,
        "include_acknowledged": include_acknowledged,
        "organization": organization,
    }
    current = page_number or 1
    events = jp.list_events(**filters, limit=page_size, offset=(current - 1) * page_size)
    body: dict[str, Any] = {"data": [dump(e) for e in events]}
    if page_number is not None:
        total = jp.count_events(**filters)
        body["pagination"] = {
            "currentPage": current,
            "pageCount": max(1, -(-total // page_size)),
            "totalCount": total,
        }
    return body


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def stream_events(
    request: Request,
    organization: OrganizationDep,
    job_id: JobIdQuery = None,
    run_id: RunIdQuery = None,
    topic: Annotated[list[str] | None, Query(description="Repeat to follow several.")] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_CURSOR, description="Replay after this cursor.")
    ] = None,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=MAX_CURSOR)] = None,
) -> StreamingResponse:
    """Server-Sent Events, live: ``id`` is the event's cursor, ``event`` its topic, ``data``
    the event as ``GET /events`` gives it. Reconnect with ``Last-Event-ID`` (or ``after``) to
    get every event since, in order, exactly once."""
    from jobs_plugin.api import organization_id

    event_filter = stream.EventFilter(
        organization_id=organization_id(organization),
        job_id=job_id,
        run_id=run_id,
        topics=frozenset(topic) if topic else None,
    )
    resume = last_event_id if last_event_id is not None else after
    hub: stream.EventHub = request.app.state.event_hub
    return StreamingResponse(
        stream.stream(hub, event_filter, resume),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/{eventId}")
def get_event(event_id: EventId, organization: OrganizationDep) -> dict[str, Any]:
    return one(dump(jp.get_event(event_id, organization=organization)))


@router.post("/{eventId}/ack")
def acknowledge_event(event_id: EventId, organization: OrganizationDep) -> dict[str, Any]:
    jp.acknowledge_event(event_id, organization=organization, actor=organization)
    return SUCCESS
