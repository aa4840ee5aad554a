"""Typed dependency aliases of the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from jobs_plugin import api
from jobs_plugin.errors import AuthenticationError
from jobs_plugin.models import MAX_PAGE_NUMBER, MAX_PAGE_SIZE

_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="pj_...",
    description="An API key: `prefect-jobs keys create --org NAME`.",
)


def get_organization(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The name of the organization a request acts for: the one its ``Authorization: Bearer``
    API key belongs to. A missing, unknown or revoked key is an ``AuthenticationError`` (401).
    """
    if credentials is None:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    return api.organization_for_key(credentials.credentials)


OrganizationDep = Annotated[str, Depends(get_organization)]
PageNumber = Annotated[int, Query(alias="pageNumber", ge=1, le=MAX_PAGE_NUMBER)]
PageSize = Annotated[int, Query(alias="pageSize", ge=1, le=MAX_PAGE_SIZE)]
JobId = Annotated[str, Path(alias="jobId")]
RunId = Annotated[str, Path(alias="runId")]
WorkflowId = Annotated[str, Path(alias="workflowId")]
EventId = Annotated[str, Path(alias="eventId")]
