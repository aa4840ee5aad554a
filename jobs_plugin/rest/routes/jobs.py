"""``/jobs``: create, read, change, delete and run jobs.

The job object is ``JobPublic`` (camelCase) plus, from the job's latest run when it has one,
Flatfile's ``progress``, ``info``, ``outcome``, ``startedAt`` and ``finishedAt``. ``status``
is our upper-case ``JobStatus`` (``PLANNING READY EXECUTING COMPLETED FAILED CANCELED``), the
spelling the seed documents, not Flatfile's lower-case wire enum.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

import jobs_plugin as jp
from jobs_plugin.errors import ConflictError
from jobs_plugin.models import (
    UNKNOWN_ACTOR,
    WORKFLOW_JOB_OPERATION,
    WORKFLOW_JOB_TYPE,
    JobCreate,
    JobPublic,
    JobRunPublic,
    JobUpdate,
)
from jobs_plugin.rest.deps import ActorDep, JobId, OrganizationDep, PageNumber, PageSize
from jobs_plugin.rest.envelopes import SUCCESS, dump, one, page

router = APIRouter(prefix="/jobs", tags=["jobs"])
RUN_ID_HEADER = "X-Run-Id"
_FROM_RUN = ("progress", "info", "outcome", "startedAt", "finishedAt")


def job_object(
    job: JobPublic, organization: str, latest: JobRunPublic | None = None
) -> dict[str, Any]:
    """The job plus fields of its latest run (read here unless the caller fetched it)."""
    data = dump(job)
    data.update(flatfile_defaults(job))
    data.update(dict.fromkeys(_FROM_RUN))
    if job.last_run_id:
        run = dump(latest or jp.get_run(job.last_run_id, organization=organization))
        data.update({key: run.get(key) for key in _FROM_RUN})
    return data


def flatfile_defaults(job: JobPublic) -> dict[str, Any]:
    """The values Flatfile's ``Job`` requires that a workflow job leaves empty.

    A job without a ``type`` (one that runs its ``workflowExecutionOrder``) is, to Flatfile's
    client, a space-level job (``type: space``, ``operation: workflows``) acting on its
    organization (``source``: the organization id); ``createdBy`` is never null.
    """
    return {
        "type": job.type.value if job.type else WORKFLOW_JOB_TYPE,
        "operation": job.operation.value if job.operation else WORKFLOW_JOB_OPERATION,
        "source": job.source or job.organization_id,
        "createdBy": job.created_by or UNKNOWN_ACTOR,
    }


def _latest_run_id(job_id: str, organization: str) -> str:
    run_id = jp.get_job(job_id, organization=organization).last_run_id
    if run_id is None:
        raise ConflictError(f"job {job_id!r} has never run")
    return run_id


@router.post("", status_code=201)
def create_job(body: JobCreate, organization: OrganizationDep, actor: ActorDep) -> dict[str, Any]:
    job = jp.create_job(body, organization=organization, actor=actor)
    return one(job_object(job, organization))


@router.get("")
def list_jobs(
    organization: OrganizationDep,
    page_number: PageNumber = 1,
    page_size: PageSize = 50,
    sort_direction: Annotated[Literal["asc", "desc"], Query(alias="sortDirection")] = "desc",
    status: str | None = None,
    source_provider: Annotated[str | None, Query(alias="sourceProvider")] = None,
    type: str | None = None,
    operation: str | None = None,
) -> dict[str, Any]:
    jobs = jp.list_jobs(
        organization=organization,
        page_number=page_number,
        page_size=page_size,
        sort_direction=sort_direction,
        status=status,
        source_provider=source_provider,
        type=type,
        operation=operation,
    )
    latest = jp.get_runs(
        [j.last_run_id for j in jobs.items if j.last_run_id], organization=organization
    )
    return page(
        [job_object(j, organization, latest.get(j.last_run_id or "")) for j in jobs.items], jobs
    )


@router.get("/{jobId}")
def get_job(job_id: JobId, organization: OrganizationDep) -> dict[str, Any]:
    return one(job_object(jp.get_job(job_id, organization=organization), organization))


@router.patch("/{jobId}")
def update_job(
    job_id: JobId, body: JobUpdate, organization: OrganizationDep, actor: ActorDep
) -> dict[str, Any]:
    job = jp.update_job(job_id, body, organization=organization, actor=actor)
    return one(job_object(job, organization))


@router.delete("/{jobId}")
def delete_job(job_id: JobId, organization: OrganizationDep) -> dict[str, Any]:
    jp.delete_job(job_id, organization=organization)
    return SUCCESS


@router.post("/{jobId}/execute")
def execute_job(job_id: JobId, organization: OrganizationDep, response: Response) -> dict[str, Any]:
    """Start a run and answer at once; the run goes on in a background thread of this server.

    The body is Flatfile's bare success; the new run's id is in the ``X-Run-Id`` header.
    """
    run = jp.execute(job_id, wait=False, organization=organization)
    response.headers[RUN_ID_HEADER] = run.id
    return SUCCESS


@router.post("/{jobId}/cancel")
def cancel_job(job_id: JobId, organization: OrganizationDep, response: Response) -> dict[str, Any]:
    """Ask the job's latest run to stop (409 when it has none or it already ended)."""
    run = jp.cancel(_latest_run_id(job_id, organization), organization=organization)
    response.headers[RUN_ID_HEADER] = run.id
    return one(job_object(jp.get_job(job_id, organization=organization), organization))


@router.post("/{jobId}/retry")
def retry_job(job_id: JobId, organization: OrganizationDep, response: Response) -> dict[str, Any]:
    """Run the latest (FAILED or CANCELED) run again, in the background; 409 otherwise."""
    run = jp.retry(_latest_run_id(job_id, organization), wait=False, organization=organization)
    response.headers[RUN_ID_HEADER] = run.id
    return one(job_object(jp.get_job(job_id, organization=organization), organization))


@router.get("/{jobId}/runs")
def list_job_runs(
    job_id: JobId,
    organization: OrganizationDep,
    page_number: PageNumber = 1,
    page_size: PageSize = 50,
) -> dict[str, Any]:
    runs = jp.list_runs(
        job_id, organization=organization, page_number=page_number, page_size=page_size
    )
    return page([dump(r) for r in runs.items], runs)
