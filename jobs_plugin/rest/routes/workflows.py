"""``/workflows``: the workflows an organization can put in a job."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

import jobs_plugin as jp
from jobs_plugin.rest.deps import OrganizationDep, WorkflowId
from jobs_plugin.rest.envelopes import dump, one, whole

router = APIRouter(prefix="/workflows", tags=["workflows"])


@router.get("")
def list_workflows(organization: OrganizationDep) -> dict[str, Any]:
    return whole([dump(w) for w in jp.list_workflows(organization=organization)])


@router.get("/{workflowId}")
def get_workflow(workflow_id: WorkflowId, organization: OrganizationDep) -> dict[str, Any]:
    return one(dump(jp.get_workflow(workflow_id, organization=organization)))
