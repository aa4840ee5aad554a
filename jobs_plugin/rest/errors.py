"""Domain errors to HTTP responses, in one table.

Every failure answers ``{"errors": [{"key": "<field in camelCase>", "message": "..."}]}``;
``key`` is present only when the error names a field (validation errors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic.alias_generators import to_camel

from jobs_plugin.errors import (
    AuthenticationError,
    ConflictError,
    ExecutionError,
    JobsError,
    NotFoundError,
    ValidationError,
)

STATUS_CODES: dict[type[JobsError], int] = {
    AuthenticationError: 401,
    ValidationError: 422,
    NotFoundError: 404,
    ConflictError: 409,  # InvalidTransition, VersionConflict
    ExecutionError: 503,
}
"""The one table: the most specific class listed wins (looked up along the MRO)."""

_REQUEST_PARTS = ("body", "query", "path", "header", "cookie")


def status_code_of(exc: JobsError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return 500


def error_body(message: str, key: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message}
    if key:
        error = {"key": key, **error}
    return {"errors": [error]}


def field_key(loc: Sequence[int | str]) -> str:
    """A pydantic ``loc`` as a camelCase path: ``jobConfigJson.workflowExecutionOrder[0]``."""
    parts = list(loc)
    if parts and parts[0] in _REQUEST_PARTS:
        parts = parts[1:]
    key = ""
    for part in parts:
        key += f"[{part}]" if isinstance(part, int) else f"{'.' if key else ''}{to_camel(part)}"
    return key or "body"


async def _jobs_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, JobsError)
    if isinstance(exc, ValidationError):
        return JSONResponse(error_body(exc.message, exc.field), status_code=status_code_of(exc))
    status = status_code_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(str(exc)), status_code=status, headers=headers)


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"key": "body" if e["type"] == "json_invalid" else field_key(e["loc"]), "message": e["msg"]}
        for e in exc.errors()
    ]
    return JSONResponse({"errors": errors or [{"message": "invalid request"}]}, status_code=422)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(JobsError, _jobs_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
