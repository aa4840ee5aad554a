"""The ``Idempotency-Key`` header of ``POST /jobs`` and ``POST /jobs/{id}/execute``.

A request sent again with the same key (and the same content) within
``PREFECT_JOBS_IDEMPOTENCY_TTL_SECONDS`` gets the first response back, status and headers
included (plus ``Idempotent-Replayed: true``), and creates nothing new.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import JSONResponse

from jobs_plugin import api
from jobs_plugin.catalog import idempotency
from jobs_plugin.settings import get_settings

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        min_length=1,
        max_length=200,
        description="Send a retried request with the same key: it returns the first result.",
    ),
]
Handler = Callable[[], tuple[dict[str, Any], dict[str, str]]]
"""Handles the request: the response body and the headers to send (and replay) with it."""


def respond(
    key: str | None, organization: str, request: Any, status_code: int, handler: Handler
) -> JSONResponse:
    """``handler``'s response, or the stored one when ``key`` was seen with this ``request``
    (any JSON-able value naming the operation and its content)."""
    if key is None:
        body, headers = handler()
        return JSONResponse(body, status_code=status_code, headers=headers)
    org_id = api.organization_id(organization)
    fingerprint = hashlib.sha256(
        json.dumps(request, sort_keys=True, default=str).encode()
    ).hexdigest()
    ttl = get_settings().idempotency_ttl_seconds
    stored = idempotency.begin(org_id, key, fingerprint, ttl)
    if stored is not None:
        headers = {**(stored.headers or {}), "Idempotent-Replayed": "true"}
        return JSONResponse(stored.response, status_code=stored.status_code or 200, headers=headers)
    try:
        body, headers = handler()
    except BaseException:
        idempotency.release(org_id, key)
        raise
    idempotency.complete(org_id, key, status_code, body, headers)
    return JSONResponse(body, status_code=status_code, headers=headers)
