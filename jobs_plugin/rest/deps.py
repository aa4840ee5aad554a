"""Typed dependency aliases of the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query

from jobs_plugin.settings import get_settings


def get_organization() -> str:
    """The organization a request acts for.

    For now every request acts for the settings' ``default_organization``; no authentication.
    This is the one place that will resolve it from the ``Authorization: Bearer`` key.
    """
    return get_settings().default_organization


OrganizationDep = Annotated[str, Depends(get_organization)]
PageNumber = Annotated[int, Query(alias="pageNumber", ge=1)]
PageSize = Annotated[int, Query(alias="pageSize", ge=1, le=1000)]
JobId = Annotated[str, Path(alias="jobId")]
RunId = Annotated[str, Path(alias="runId")]
WorkflowId = Annotated[str, Path(alias="workflowId")]
