"""``/runs``: one run of a job, with its workflow runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

import jobs_plugin as jp
from jobs_plugin.rest.deps import OrganizationDep, RunId
from jobs_plugin.rest.envelopes import dump, one

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("/{runId}")
def get_run(run_id: RunId, organization: OrganizationDep) -> dict[str, Any]:
    return one(dump(jp.get_run(run_id, organization=organization)))
