"""``/jobs``: create, read, change, delete and run jobs.

The job object is ``JobPublic`` (camelCase) plus, from the job's latest run when it has one,
Flatfile's ``progress``, ``info``, ``outcome``, ``startedAt`` and ``finishedAt``. ``status``
is our upper-case ``JobStatus`` (``PLANNING READY EXECUTING COMPLETED FAILED CANCELED``), the
spelling the seed documents, not Flatfile's lower-case wire enum.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import JSONResponse

import jobs_plugin as jp
from jobs_plugin.errors import ConflictError, ValidationError
from jobs_plugin.models import (
    MAX_VERSION,
    UNKNOWN_ACTOR,
    WORKFLOW_JOB_OPERATION,
    WORKFLOW_JOB_TYPE,
    JobAck,
    JobCancelReport,
    JobCreate,
    JobOutcomeReport,
    JobPublic,
    JobRunPublic,
    JobScheduleCreate,
    JobScheduleUpdate,
    JobSplit,
    JobUpdate,
)
from jobs_plugin.rest.deps import ActorDep, JobId, OrganizationDep, PageNumber, PageSize
from jobs_plugin.rest.envelopes import SUCCESS, dump, one, page, whole
from jobs_plugin.rest.idempotency import IdempotencyKey, respond

router = APIRouter(prefix="/jobs", tags=["jobs"])
RUN_ID_HEADER = "X-Run-Id"
_FROM_RUN = ("progress", "info", "outcome", "startedAt", "finishedAt", "outcomeAcknowledgedAt")


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


def _etag(job: JobPublic) -> dict[str, str]:
    return {"ETag": f'"{job.version}"'}


def _if_match(value: str | None) -> int | None:
    """The job version an ``If-Match`` header names: ``3``, ``"3"`` or ``W/"3"``."""
    if value is None or value.strip() == "*":
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise ValidationError("If-Match", 'must be a job version, such as "3"')
    return int(text)


IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=40,
        description="The job version (its `ETag`) this change was made from; a stale one: 409.",
    ),
]
Force = Annotated[
    bool,
    Query(description="Cancel the job's unfinished runs first, and delete once they stopped."),
]
Version = Annotated[
    int | None,
    Query(ge=1, le=MAX_VERSION, description="A version of the job (default: the current one)."),
]


@router.post("", status_code=201, response_model=None)
def create_job(
    body: JobCreate,
    organization: OrganizationDep,
    actor: ActorDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Create a job; ``trigger: immediate`` starts a run at once (in the background)."""

    def handle() -> tuple[dict[str, Any], dict[str, str]]:
        job = jp.create_job(body, organization=organization, actor=actor)
        headers = _etag(job) | ({RUN_ID_HEADER: job.last_run_id} if job.last_run_id else {})
        return one(job_object(job, organization)), headers

    request = ["POST /jobs", body.model_dump(mode="json", by_alias=True, exclude_unset=True)]
    return respond(idempotency_key, organization, request, 201, handle)


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
    source: Annotated[str | None, Query(description="Jobs acting on this id.")] = None,
    file_id: Annotated[str | None, Query(alias="fileId", description="Jobs on this file.")] = None,
    workbook_id: Annotated[
        str | None,
        Query(alias="workbookId", description="Jobs whose source or destination it is."),
    ] = None,
) -> dict[str, Any]:
    """Flatfile's ``environmentId``, ``spaceId``, ``parentId`` and ``excludeChildJobs`` are
    accepted and have nothing to filter here (no environments, spaces or child jobs)."""
    if source is not None and file_id is not None and source != file_id:
        raise ValidationError("fileId", "differs from source")
    jobs = jp.list_jobs(
        organization=organization,
        page_number=page_number,
        page_size=page_size,
        sort_direction=sort_direction,
        status=status,
        source_provider=source_provider,
        type=type,
        operation=operation,
        source=source or file_id,
        touching=workbook_id,
    )
    latest = jp.get_runs(
        [j.last_run_id for j in jobs.items if j.last_run_id], organization=organization
    )
    return page(
        [job_object(j, organization, latest.get(j.last_run_id or "")) for j in jobs.items], jobs
    )


@router.get("/{jobId}")
def get_job(job_id: JobId, organization: OrganizationDep, response: Response) -> dict[str, Any]:
    job = jp.get_job(job_id, organization=organization)
    response.headers.update(_etag(job))
    return one(job_object(job, organization))


@router.patch("/{jobId}")
def update_job(
    job_id: JobId,
    body: JobUpdate,
    organization: OrganizationDep,
    actor: ActorDep,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Change a job: a new version. Send the version it was made from (``If-Match`` or a
    ``version`` field) and a change made meanwhile by someone else is a 409, not overwritten."""
    expected = _if_match(if_match)
    if expected is not None and body.version is not None and expected != body.version:
        raise ValidationError("version", "differs from the If-Match header")
    job = jp.update_job(
        job_id, body, expected_version=expected, organization=organization, actor=actor
    )
    response.headers.update(_etag(job))
    return one(job_object(job, organization))


@router.delete("/{jobId}")
def delete_job(
    job_id: JobId, organization: OrganizationDep, actor: ActorDep, force: Force = False
) -> dict[str, Any]:
    """Delete a job (its runs and events stay). A job with an unfinished run is a 409 unless
    ``force=true``."""
    jp.delete_job(job_id, force=force, organization=organization, actor=actor)
    return SUCCESS


@router.post("/{jobId}/execute", response_model=None)
def execute_job(
    job_id: JobId,
    organization: OrganizationDep,
    actor: ActorDep,
    version: Version = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Start a run (of the current or a given ``version``) and answer at once; the run goes
    on on the job-runner deployment's runner or workers when there is one, else in the
    background of this server. The body is Flatfile's bare success; the run's id is in
    ``X-Run-Id``."""

    def handle() -> tuple[dict[str, Any], dict[str, str]]:
        run = jp.execute(
            job_id, version=version, wait=False, organization=organization, actor=actor
        )
        return SUCCESS, {RUN_ID_HEADER: run.id}

    request = ["POST /jobs/{jobId}/execute", job_id, version]
    return respond(idempotency_key, organization, request, 200, handle)


@router.post("/{jobId}/cancel")
def cancel_job(
    job_id: JobId,
    organization: OrganizationDep,
    response: Response,
    body: JobCancelReport | None = None,
) -> dict[str, Any]:
    """Ask the job's latest run to stop (409 when it has none or it already ended)."""
    info = body.info if body else None
    run = jp.cancel(_latest_run_id(job_id, organization), info=info, organization=organization)
    response.headers[RUN_ID_HEADER] = run.id
    return one(job_object(jp.get_job(job_id, organization=organization), organization))


@router.post("/{jobId}/retry")
def retry_job(
    job_id: JobId, organization: OrganizationDep, actor: ActorDep, response: Response
) -> dict[str, Any]:
    """Run the latest (FAILED or CANCELED) run again, in the background; 409 otherwise."""
    run = jp.retry(
        _latest_run_id(job_id, organization), wait=False, organization=organization, actor=actor
    )
    response.headers[RUN_ID_HEADER] = run.id
    return one(job_object(jp.get_job(job_id, organization=organization), organization))


@router.post("/{jobId}/ack")
def ack_job(
    job_id: JobId, organization: OrganizationDep, actor: ActorDep, body: JobAck | None = None
) -> dict[str, Any]:
    """A job you run yourself (``managed: false``) is being worked on: EXECUTING, with your
    ``info`` and ``progress``. 409 for a managed job."""
    body = body or JobAck()
    job = jp.ack_job(
        job_id, info=body.info, progress=body.progress, organization=organization, actor=actor
    )
    return one(job_object(job, organization))


def _finish(
    job_id: str, organization: str, body: JobOutcomeReport | None, succeeded: bool
) -> dict[str, Any]:
    body = body or JobOutcomeReport()
    job = jp.finish_job(
        job_id,
        succeeded=succeeded,
        outcome=body.outcome,
        info=body.info,
        organization=organization,
    )
    return one(job_object(job, organization))


@router.post("/{jobId}/complete")
def complete_job(
    job_id: JobId, organization: OrganizationDep, body: JobOutcomeReport | None = None
) -> dict[str, Any]:
    """A job you run yourself succeeded: COMPLETED, with your ``outcome``."""
    return _finish(job_id, organization, body, succeeded=True)


@router.post("/{jobId}/fail")
def fail_job(
    job_id: JobId, organization: OrganizationDep, body: JobOutcomeReport | None = None
) -> dict[str, Any]:
    """A job you run yourself failed: FAILED, with your ``outcome``."""
    return _finish(job_id, organization, body, succeeded=False)


@router.post("/{jobId}/outcome/ack")
def acknowledge_outcome(
    job_id: JobId, organization: OrganizationDep, actor: ActorDep
) -> dict[str, Any]:
    """The outcome of the job's latest run has been seen (``outcomeAcknowledgedAt``)."""
    job = jp.acknowledge_outcome(job_id, organization=organization, actor=actor)
    return one(job_object(job, organization))


@router.post("/{jobId}/split")
def split_job(
    job_id: JobId, body: JobSplit, organization: OrganizationDep, actor: ActorDep
) -> dict[str, Any]:
    """Declare the parts of a job you run yourself (its ``progress`` then counts them). Parts
    of a job run in sequence: ``runInParallel: true`` is refused."""
    if body.run_in_parallel:
        raise ValidationError("runInParallel", "parts of a job run in sequence")
    job = jp.split_job(job_id, parts=body.parts, organization=organization, actor=actor)
    return one(job_object(job, organization))


@router.get("/{jobId}/plan")
def get_plan(
    job_id: JobId, organization: OrganizationDep, version: Version = None
) -> dict[str, Any]:
    """The workflows a run would execute, resolved and with validated parameters (as in
    PLANNING), for the current or a given ``version``."""
    steps = jp.plan(job_id, version=version, organization=organization)
    job = job_object(jp.get_job(job_id, organization=organization), organization)
    return one({"job": job, "plan": {"workflows": steps}})


@router.get("/{jobId}/versions")
def list_versions(job_id: JobId, organization: OrganizationDep) -> dict[str, Any]:
    """Every configuration the job has had, oldest first."""
    return whole([dump(v) for v in jp.list_versions(job_id, organization=organization)])


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


# --------------------------------------------------------------------------- schedules

ScheduleId = Annotated[str, Path(alias="scheduleId")]


@router.get("/{jobId}/schedules")
def list_schedules(job_id: JobId, organization: OrganizationDep) -> dict[str, Any]:
    """The job's schedules (cron or interval); they are its Prefect deployment's schedules."""
    return whole([dump(s) for s in jp.list_schedules(job_id, organization=organization)])


@router.post("/{jobId}/schedules", status_code=201)
def add_schedule(
    job_id: JobId, body: JobScheduleCreate, organization: OrganizationDep, actor: ActorDep
) -> dict[str, Any]:
    """Add a schedule; the job's Prefect deployment is created with its first one (503 when
    no Prefect server with the job-runner deployment on a work pool can take it)."""
    return one(dump(jp.schedule_job(job_id, body, organization=organization, actor=actor)))


@router.patch("/{jobId}/schedules/{scheduleId}")
def update_schedule(
    job_id: JobId,
    schedule_id: ScheduleId,
    body: JobScheduleUpdate,
    organization: OrganizationDep,
    actor: ActorDep,
) -> dict[str, Any]:
    """Change a schedule; ``{"active": false}`` pauses it, ``{"active": true}`` resumes it."""
    schedule = jp.update_schedule(job_id, schedule_id, body, organization=organization, actor=actor)
    return one(dump(schedule))


@router.delete("/{jobId}/schedules/{scheduleId}")
def delete_schedule(
    job_id: JobId, schedule_id: ScheduleId, organization: OrganizationDep, actor: ActorDep
) -> dict[str, Any]:
    jp.delete_schedule(job_id, schedule_id, organization=organization, actor=actor)
    return SUCCESS
