"""``/events``: what happened to jobs, oldest first.

Paged by cursor, not by page number: pass the last event's ``cursor`` as ``after`` to get the
next events. The response is ``{"data": [...]}`` (Flatfile's ``pagination`` is optional).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

import jobs_plugin as jp
from jobs_plugin.rest.deps import OrganizationDep, PageSize
from jobs_plugin.rest.envelopes import dump

router = APIRouter(prefix="/events", tags=["events"])


@router.get("")
def list_events(
    organization: OrganizationDep,
    job_id: Annotated[str | None, Query(alias="jobId")] = None,
    run_id: Annotated[str | None, Query(alias="runId")] = None,
    topic: str | None = None,
    after: Annotated[int | None, Query(ge=0)] = None,
    page_size: PageSize = 100,
) -> dict[str, Any]:
    events = jp.list_events(
        job_id=job_id,
        run_id=run_id,
        topic=topic,
        after=after,
        limit=page_size,
        organization=organization,
    )
    return {"data": [dump(e) for e in events]}
