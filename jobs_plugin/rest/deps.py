"""Typed dependency aliases of the routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import anyio
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


@dataclass(frozen=True)
class Caller:
    """Who sends a request: the organization of its API key, and the key's id (the actor)."""

    organization: str
    actor: str


async def get_caller(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The caller of a request, from its ``Authorization: Bearer`` API key. A missing, unknown
    or revoked key is an ``AuthenticationError`` (401). A key seen lately is known without
    I/O; otherwise the catalog is asked on a worker thread."""
    if credentials is None:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    secret = credentials.credentials
    found = api.cached_caller(secret)
    if found is None:
        found = await anyio.to_thread.run_sync(api.authenticate, secret)
    organization, actor = found
    return Caller(organization, actor)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_organization(caller: CallerDep) -> str:
    """The name of the organization a request acts for (async: no I/O, so no thread hop)."""
    return caller.organization


async def get_actor(caller: CallerDep) -> str:
    """The id of the API key a request was sent with: what it creates is ``createdBy`` it."""
    return caller.actor


OrganizationDep = Annotated[str, Depends(get_organization)]
ActorDep = Annotated[str, Depends(get_actor)]
PageNumber = Annotated[int, Query(alias="pageNumber", ge=1, le=MAX_PAGE_NUMBER)]
PageSize = Annotated[int, Query(alias="pageSize", ge=1, le=MAX_PAGE_SIZE)]
JobId = Annotated[str, Path(alias="jobId")]
RunId = Annotated[str, Path(alias="runId")]
WorkflowId = Annotated[str, Path(alias="workflowId")]
EventId = Annotated[str, Path(alias="eventId")]
