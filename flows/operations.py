"""The built-in workflows of Flatfile's four kinds of jobs: ``operation.extract``,
``operation.map``, ``operation.delete`` and ``operation.export``.

A job with ``operation`` set and no execution order runs one of them with its own ``type``,
``source``, ``destination`` and ``config``; any job may also list them as steps. The work is
in ``jobs_plugin.data.operations`` (chunked, checkpointed, resumable); these flows only bind
it to the run context.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from jobs_plugin import get_run_context, workflow
from jobs_plugin.data import operations
from jobs_plugin.errors import ValidationError

__all__ = ["delete", "export", "extract", "map_records"]


def _require(job_type: str | None, allowed: tuple[str, ...], operation: str) -> None:
    if job_type is not None and job_type not in allowed:
        raise ValidationError("type", f"{operation!r} acts on {' or '.join(allowed)}")


@workflow(id="operation.extract", description="Extract a file's rows into a workbook.")
@flow(name="Extract file")
async def extract(
    type: str | None = "file",
    source: str | None = None,
    destination: str | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``source``: a file id; ``destination``: a workbook id (None: a new workbook named after
    the file); ``config``: ``{options?: {delimiter?, encoding?, header?}, chunkSize?}``."""
    _require(type, ("file",), "extract")
    if not source:
        raise ValidationError("source", "is required: the id of the file to extract")
    return await operations.extract(get_run_context(), source, destination, config)


@workflow(id="operation.map", description="Map a sheet's records into another sheet.")
@flow(name="Map records")
async def map_records(
    type: str | None = "sheet",
    source: str | None = None,
    destination: str | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``config``: ``{sourceSheetId?, destinationSheetId?, mappingRules?: [...], chunkSize?}``."""
    _require(type, ("workbook", "sheet"), "map")
    if not source:
        raise ValidationError("source", "is required: the workbook or sheet to map from")
    return await operations.map_records(get_run_context(), type, source, destination, config)


@workflow(id="operation.delete", description="Delete records of a sheet or workbook.")
@flow(name="Delete records")
async def delete(
    type: str | None = "sheet",
    source: str | None = None,
    destination: str | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``config``: ``{sheet?, filter?, filterField?, searchValue?, searchField?, ids?,
    exceptions?, chunkSize?}``."""
    _require(type, ("workbook", "sheet"), "delete")
    target = source or (config or {}).get("sheet")
    if not target:
        raise ValidationError("source", "is required: the workbook or sheet to delete from")
    return await operations.delete_records(get_run_context(), type, target, config)


@workflow(id="operation.export", description="Export records into a new file.")
@flow(name="Export records")
async def export(
    type: str | None = "sheet",
    source: str | None = None,
    destination: str | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``config``: ``{format?: csv|tsv|jsonl|xlsx, options?: {sortField?, sortDirection?,
    filter?, filterField?, searchValue?, searchField?, ids?}, sheet?, chunkSize?}``."""
    _require(type, ("workbook", "sheet"), "export")
    if not source:
        raise ValidationError("source", "is required: the workbook or sheet to export")
    return await operations.export(get_run_context(), type, source, config)
