"""Organizations, workflows, jobs, runs, events and API keys."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prefect.client.schemas.objects import StateType
from sqlmodel import Session, col, func, select
from sqlmodel.sql.expression import SelectOfScalar

from jobs_plugin import db, ids, prefect_events
from jobs_plugin.catalog import webhooks
from jobs_plugin.db import EVENTS_WRITTEN, read_session, write_session
from jobs_plugin.errors import (
    ApiKeyNotFound,
    AuthenticationError,
    EventNotFound,
    InvalidTransition,
    JobNotFound,
    RunNotFound,
    VersionConflict,
    WorkflowNotFound,
)
from jobs_plugin.models import (
    WORKFLOW_JOB_OPERATION,
    WORKFLOW_JOB_TYPE,
    ApiKey,
    Event,
    Job,
    JobCreate,
    JobRun,
    JobSchedule,
    JobUpdate,
    JobVersion,
    Organization,
    Page,
    Trigger,
    Workflow,
    WorkflowCreate,
    WorkflowRun,
    utcnow,
)
from jobs_plugin.translation import (
    JobStatus,
    Topic,
    WorkflowRunStatus,
    translate,
)

# Fields of a job that make up its configuration; changing any of them makes a new version.
CONFIG_FIELDS = (
    "name",
    "source_provider",
    "type",
    "operation",
    "source",
    "destination",
    "trigger",
    "managed",
    "max_concurrent_runs",
    "overlap",
    "job_config_json",
    "config",
    "input",
    "job_metadata",
)
_EVENT_LOCK_KEY = 827262
_TOPIC_STATUS = {
    Topic.WAITING: JobStatus.READY,
    Topic.STARTED: JobStatus.EXECUTING,
    Topic.COMPLETED: JobStatus.COMPLETED,
    Topic.FAILED: JobStatus.FAILED,
    Topic.CANCELED: JobStatus.CANCELED,
}


# Every event this process commits is also a Prefect event (when a Prefect server is set).
db.listen_for_events(prefect_events.emit)


# --------------------------------------------------------------------------- organizations


def ensure_organization(name: str) -> Organization:
    """The organization called ``name``, created if it does not exist yet."""
    with read_session() as session:
        found = session.exec(select(Organization).where(Organization.name == name)).first()
        if found:
            return found
    try:
        with write_session() as session:
            org = Organization(id=ids.new_id(ids.ORGANIZATION), name=name)
            session.add(org)
        return org
    except sa.exc.IntegrityError:  # created by someone else in the meantime
        with read_session() as session:
            return session.exec(select(Organization).where(Organization.name == name)).one()


# --------------------------------------------------------------------------- workflows


def upsert_workflow(
    spec: WorkflowCreate, *, organization_id: str | None, parameter_schema: dict[str, Any] | None
) -> Workflow:
    with write_session() as session:
        workflow = session.get(Workflow, spec.id)
        if workflow is None:
            workflow = Workflow(organization_id=organization_id, **spec.model_dump())
        elif workflow.organization_id != organization_id:
            raise InvalidTransition(
                f"workflow id {spec.id!r} is already registered to another organization"
            )
        else:
            workflow.sqlmodel_update(spec.model_dump(exclude={"id"}))
        workflow.parameter_schema = parameter_schema
        workflow.updated_at = utcnow()
        session.add(workflow)
    return workflow


def _visible(organization_id: str | None) -> Any:
    return sa.or_(
        col(Workflow.organization_id).is_(None), col(Workflow.organization_id) == organization_id
    )


def get_workflow(workflow_id: str, organization_id: str | None) -> Workflow:
    with read_session() as session:
        workflow = session.exec(
            select(Workflow).where(Workflow.id == workflow_id, _visible(organization_id))
        ).first()
    if workflow is None:
        raise WorkflowNotFound(workflow_id)
    return workflow


def find_workflows(workflow_ids: Sequence[str], organization_id: str) -> dict[str, Workflow]:
    with read_session() as session:
        rows = session.exec(
            select(Workflow).where(
                col(Workflow.id).in_(set(workflow_ids)), _visible(organization_id)
            )
        ).all()
    return {w.id: w for w in rows}


def list_workflows(organization_id: str | None) -> list[Workflow]:
    with read_session() as session:
        return list(
            session.exec(
                select(Workflow).where(_visible(organization_id)).order_by(col(Workflow.id))
            ).all()
        )


# --------------------------------------------------------------------------- jobs


def snapshot_of(job: Job) -> dict[str, Any]:
    """The configuration of a job as plain JSON: what a version stores and a run executes."""
    return {
        "id": job.id,
        "organization_id": job.organization_id,
        "version": job.version,
        **{name: _plain(getattr(job, name)) for name in CONFIG_FIELDS},
    }


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def create_job(
    organization_id: str,
    spec: JobCreate,
    *,
    actor: str | None = None,
    job_id: str | None = None,
    schedules: Sequence[JobSchedule] = (),
) -> Job:
    """A new job (id ``job_id`` when given) with its ``schedules``, in one transaction."""
    now = utcnow()
    job = Job(
        id=job_id or ids.new_id(ids.JOB),
        organization_id=organization_id,
        **spec.model_dump(exclude={"job_config_json", "schedules"}),
        job_config_json=spec.job_config_json.model_dump(mode="json", by_alias=True),
        status=JobStatus.READY if spec.trigger is Trigger.MANUAL else JobStatus.PLANNING,
        created_by=actor,
        updated_by=actor,
        created_at=now,
        updated_at=now,
    )
    with write_session() as session:
        session.add(job)
        session.flush()
        session.add(
            JobVersion(job_id=job.id, version=1, snapshot=snapshot_of(job), created_by=actor)
        )
        _emit(session, job, None, Topic.CREATED, {"version": 1, "status": job.status.value})
        if schedules:
            from jobs_plugin.catalog.schedules import replace_in

            replace_in(session, job, schedules, actor)
    return job


def _job_query(organization_id: str) -> SelectOfScalar[Job]:
    return select(Job).where(Job.organization_id == organization_id, col(Job.deleted_at).is_(None))


def get_job(job_id: str, organization_id: str) -> Job:
    with read_session() as session:
        job = session.exec(_job_query(organization_id).where(Job.id == job_id)).first()
    if job is None:
        raise JobNotFound(job_id)
    return job


def list_jobs(
    organization_id: str,
    *,
    page_number: int = 1,
    page_size: int = 50,
    status: JobStatus | None = None,
    source_provider: str | None = None,
    type: str | None = None,
    operation: str | None = None,
    source: str | None = None,
    touching: str | None = None,
    sort_direction: str = "desc",
) -> Page[Job]:
    """``source``: jobs acting on that id; ``touching``: jobs whose source or destination it
    is (Flatfile's ``workbookId`` filter)."""
    query = _job_query(organization_id)
    if source is not None:
        query = query.where(Job.source == source)
    if touching is not None:
        query = query.where((Job.source == touching) | (Job.destination == touching))
    if status is not None:
        query = query.where(Job.status == status)
    if source_provider is not None:
        query = query.where(Job.source_provider == source_provider)
    # Workflow jobs have neither; Flatfile's clients know them by their wire defaults.
    if type == WORKFLOW_JOB_TYPE:
        query = query.where(col(Job.type).is_(None))
    elif type is not None:
        query = query.where(Job.type == type)
    if operation == WORKFLOW_JOB_OPERATION:
        query = query.where(col(Job.operation).is_(None))
    elif operation is not None:
        query = query.where(Job.operation == operation)
    order = col(Job.created_at).asc() if sort_direction == "asc" else col(Job.created_at).desc()
    with read_session() as session:
        total = session.exec(select(func.count()).select_from(query.subquery())).one()
        rows = session.exec(
            query.order_by(order, col(Job.id))
            .offset((page_number - 1) * page_size)
            .limit(page_size)
        ).all()
    return Page[Job](items=list(rows), total=total, page_number=page_number, page_size=page_size)


def update_job(
    job_id: str,
    organization_id: str,
    changes: JobUpdate,
    *,
    expected_version: int | None = None,
    actor: str | None = None,
    schedules: Sequence[JobSchedule] | None = None,
) -> Job:
    """Apply the fields set in ``changes``; a real change makes a new version. ``schedules``
    (when given) replace the job's schedules in the same transaction; they are not versioned.

    With ``expected_version``, a job whose version moved on in the meantime is not touched and
    ``VersionConflict`` is raised: no lost updates.
    """
    data = changes.model_dump(exclude_unset=True, exclude={"version", "schedules"})
    if "job_config_json" in data and changes.job_config_json is not None:
        data["job_config_json"] = changes.job_config_json.model_dump(mode="json", by_alias=True)
    with write_session() as session:
        job = _locked_job(session, job_id, organization_id)
        if expected_version is not None and job.version != expected_version:
            raise VersionConflict(
                f"job {job_id} is at version {job.version}, not {expected_version}"
            )
        if schedules is not None:
            from jobs_plugin.catalog.schedules import replace_in

            replace_in(session, job, schedules, actor)
        before = snapshot_of(job)
        job.sqlmodel_update(data)
        after = snapshot_of(job)
        if after == before:
            return job
        job.version += 1
        job.updated_at = utcnow()
        job.updated_by = actor
        session.add(job)
        session.add(
            JobVersion(
                job_id=job.id, version=job.version, snapshot=snapshot_of(job), created_by=actor
            )
        )
        changed = sorted(k for k in after if after[k] != before[k] and k != "version")
        _emit(session, job, None, Topic.UPDATED, {"version": job.version, "changed": changed})
    return job


def delete_job(job_id: str, organization_id: str, *, actor: str | None = None) -> Job:
    """Soft-delete: the job disappears from reads, its runs and events stay for the record."""
    with write_session() as session:
        job = _locked_job(session, job_id, organization_id)
        active = session.exec(
            select(JobRun).where(
                JobRun.job_id == job_id,
                col(JobRun.status).in_([s.value for s in JobStatus if not s.is_terminal]),
            )
        ).first()
        if active is not None:
            raise InvalidTransition(f"job {job_id} has an unfinished run {active.id}")
        job.deleted_at = utcnow()
        job.updated_by = actor
        session.add(job)
        _emit(session, job, None, Topic.DELETED, {"deletedBy": actor})
    return job


def list_versions(job_id: str, organization_id: str) -> list[JobVersion]:
    get_job(job_id, organization_id)
    with read_session() as session:
        return list(
            session.exec(
                select(JobVersion)
                .where(JobVersion.job_id == job_id)
                .order_by(col(JobVersion.version))
            ).all()
        )


def get_version(job_id: str, organization_id: str, version: int) -> JobVersion:
    get_job(job_id, organization_id)
    with read_session() as session:
        found = session.exec(
            select(JobVersion).where(JobVersion.job_id == job_id, JobVersion.version == version)
        ).first()
    if found is None:
        raise JobNotFound(f"{job_id}@v{version}")
    return found


def _locked_job(session: Session, job_id: str, organization_id: str) -> Job:
    job = session.exec(
        _job_query(organization_id).where(Job.id == job_id).with_for_update()
    ).first()
    if job is None:
        raise JobNotFound(job_id)
    return job


# --------------------------------------------------------------------------- runs


def create_run(
    job_id: str,
    organization_id: str,
    *,
    version: int | None = None,
    actor: str | None = None,
) -> JobRun:
    """A new run in PLANNING, frozen on the job's current (or the given) version."""
    with write_session() as session:
        job = _locked_job(session, job_id, organization_id)
        if version is None or version == job.version:
            snapshot, run_version = snapshot_of(job), job.version
        else:
            stored = session.exec(
                select(JobVersion).where(JobVersion.job_id == job_id, JobVersion.version == version)
            ).first()
            if stored is None:
                raise JobNotFound(f"{job_id}@v{version}")
            snapshot, run_version = stored.snapshot, version
        run = JobRun(
            id=ids.new_id(ids.RUN),
            job_id=job.id,
            organization_id=organization_id,
            job_version=run_version,
            snapshot=snapshot,
            created_by=actor,
        )
        session.add(run)
        job.last_run_id = run.id
        job.status = JobStatus.PLANNING
        session.add(job)
    return run


def create_retry_run(run_id: str, organization_id: str, *, actor: str | None = None) -> JobRun:
    """A new attempt of a FAILED or CANCELED run that starts at its first unfinished step.

    Steps that completed in the earlier attempt are carried over as COMPLETED (``reused_from``)
    and are not run again.
    """
    with write_session() as session:
        previous = _locked_run(session, run_id, organization_id)
        if previous.status not in (JobStatus.FAILED, JobStatus.CANCELED):
            raise InvalidTransition(
                f"run {run_id} is {previous.status.value}; "
                "only FAILED or CANCELED runs can be retried"
            )
        job = _locked_job(session, previous.job_id, organization_id)
        steps = _workflow_runs(session, run_id)
        done = [s for s in steps if s.status is WorkflowRunStatus.COMPLETED]
        start = len(done) if all(s.position == i for i, s in enumerate(done)) else 0
        run = JobRun(
            id=ids.new_id(ids.RUN),
            job_id=previous.job_id,
            organization_id=organization_id,
            job_version=previous.job_version,
            snapshot=previous.snapshot,
            attempt=previous.attempt + 1,
            retry_of=previous.id,
            start_position=start,
            created_by=actor,
        )
        session.add(run)
        session.flush()
        for step in done[:start]:
            session.add(
                WorkflowRun(
                    id=ids.new_id(ids.WORKFLOW_RUN),
                    run_id=run.id,
                    position=step.position,
                    workflow_id=step.workflow_id,
                    name=step.name,
                    isolation=step.isolation,
                    status=WorkflowRunStatus.COMPLETED,
                    parts=step.parts,
                    processed=step.parts,
                    prefect_flow_run_id=step.prefect_flow_run_id,
                    reused_from=step.reused_from or step.id,
                    started_at=step.started_at,
                    finished_at=step.finished_at,
                )
            )
        job.last_run_id = run.id
        job.status = JobStatus.PLANNING
        session.add(job)
    return run


def get_run(run_id: str, organization_id: str | None = None) -> JobRun:
    with read_session() as session:
        run = session.get(JobRun, run_id)
    if run is None or (organization_id is not None and run.organization_id != organization_id):
        raise RunNotFound(run_id)
    return run


def list_runs(
    organization_id: str,
    *,
    job_id: str | None = None,
    status: JobStatus | None = None,
    page_number: int = 1,
    page_size: int = 50,
) -> Page[JobRun]:
    query = select(JobRun).where(JobRun.organization_id == organization_id)
    if job_id is not None:
        query = query.where(JobRun.job_id == job_id)
    if status is not None:
        query = query.where(JobRun.status == status)
    with read_session() as session:
        total = session.exec(select(func.count()).select_from(query.subquery())).one()
        rows = session.exec(
            query.order_by(col(JobRun.created_at).desc(), col(JobRun.id))
            .offset((page_number - 1) * page_size)
            .limit(page_size)
        ).all()
    return Page[JobRun](items=list(rows), total=total, page_number=page_number, page_size=page_size)


def list_workflow_runs(run_id: str) -> list[WorkflowRun]:
    with read_session() as session:
        return _workflow_runs(session, run_id)


def get_runs(run_ids: Sequence[str], organization_id: str) -> dict[str, JobRun]:
    """Several runs of one organization in one query (unknown ids are left out)."""
    with read_session() as session:
        rows = session.exec(
            select(JobRun).where(
                col(JobRun.id).in_(set(run_ids)), JobRun.organization_id == organization_id
            )
        ).all()
    return {r.id: r for r in rows}


def workflow_runs_of(run_ids: Sequence[str]) -> dict[str, list[WorkflowRun]]:
    """The steps of several runs in one query, each list in position order."""
    found: dict[str, list[WorkflowRun]] = {run_id: [] for run_id in run_ids}
    if not found:
        return found
    with read_session() as session:
        rows = session.exec(
            select(WorkflowRun)
            .where(col(WorkflowRun.run_id).in_(set(run_ids)))
            .order_by(col(WorkflowRun.run_id), col(WorkflowRun.position))
        ).all()
    for row in rows:
        found[row.run_id].append(row)
    return found


def _workflow_runs(session: Session, run_id: str) -> list[WorkflowRun]:
    return list(
        session.exec(
            select(WorkflowRun)
            .where(WorkflowRun.run_id == run_id)
            .order_by(col(WorkflowRun.position))
        ).all()
    )


def _locked_run(session: Session, run_id: str, organization_id: str | None = None) -> JobRun:
    run = session.exec(select(JobRun).where(JobRun.id == run_id).with_for_update()).first()
    if run is None or (organization_id is not None and run.organization_id != organization_id):
        raise RunNotFound(run_id)
    return run


def set_plan(run_id: str, steps: Sequence[dict[str, Any]]) -> JobRun:
    """Record the resolved steps of a run (PENDING workflow runs) and its initial parts.

    ``steps``: one dict per step with ``position``, ``workflow_id``, ``name``, ``isolation``.
    Positions already recorded (steps carried over by a retry) are kept as they are.
    """
    with write_session() as session:
        run = _locked_run(session, run_id)
        existing = {s.position: s for s in _workflow_runs(session, run_id)}
        for step in steps:
            if step["position"] in existing:
                continue
            workflow_run = WorkflowRun(id=ids.new_id(ids.WORKFLOW_RUN), run_id=run_id, **step)
            session.add(workflow_run)
            existing[workflow_run.position] = workflow_run
        run.parts = sum(s.parts for s in existing.values())
        run.processed = sum(s.processed for s in existing.values())
        run.progress = _progress(run.processed, run.parts)
        run.updated_at = utcnow()
        session.add(run)
    return run


def observe_state(
    run_id: str,
    state_type: Any,
    state_name: str | None = None,
    *,
    message: str | None = None,
    prefect_flow_run_id: str | None = None,
    replace_flow_run: bool = False,
) -> JobRun:
    """Apply a Prefect state of the run's flow run through the translation table; record
    ``prefect_flow_run_id`` if the run has none (or, with ``replace_flow_run``, in any case).

    Idempotent and monotonic: observing the same or an older state again changes nothing
    (and costs only a read).
    """
    with read_session() as session:
        current = session.get(JobRun, run_id)
        if (
            current is not None
            and not translate(current.status, state_type, state_name).changed
            and (
                prefect_flow_run_id is None
                or current.prefect_flow_run_id == prefect_flow_run_id
                or (current.prefect_flow_run_id and not replace_flow_run)
            )
        ):
            return current
    with write_session() as session:
        run = _locked_run(session, run_id)
        if prefect_flow_run_id and (replace_flow_run or not run.prefect_flow_run_id):
            run.prefect_flow_run_id = prefect_flow_run_id
        _apply_state(session, run, state_type, state_name, message)
    return run


def _apply_state(
    session: Session, run: JobRun, state_type: Any, state_name: str | None, message: str | None
) -> None:
    """The translation of a Prefect state applied to a locked run, with its events."""
    transition = translate(run.status, state_type, state_name)
    if not transition.changed:
        session.add(run)
        return
    now = utcnow()
    run.status = transition.status
    run.updated_at = now
    if transition.status is JobStatus.EXECUTING or (
        transition.status is JobStatus.COMPLETED and run.started_at is None
    ):
        run.started_at = run.started_at or now
    if transition.status.is_terminal:
        run.finished_at = now
        if transition.status is JobStatus.COMPLETED:
            run.processed = run.parts
            run.progress = 100
        run.info = message or run.info
        ending = {
            "heading": transition.status.value.capitalize(),
            "message": message or _default_outcome(transition.status, run),
        }
        # A workflow's own outcome (``ctx.set_outcome``) stands when the run completes;
        # on failure its extra keys stay but the heading and message say what went wrong.
        reported = run.outcome or {}
        run.outcome = (
            ending | reported if transition.status is JobStatus.COMPLETED else reported | ending
        )
    session.add(run)
    _sync_job_status(session, run)
    for topic in transition.topics:
        payload = _run_payload(run) | {"status": _TOPIC_STATUS[topic].value}
        _emit(session, None, run, topic, payload)


def _default_outcome(status: JobStatus, run: JobRun) -> str:
    if status is JobStatus.COMPLETED:
        return f"{run.processed} of {run.parts} parts processed"
    return str(status.value).lower()


def set_outcome(run_id: str, outcome: dict[str, Any]) -> JobRun:
    """Merge ``outcome`` into the run's outcome (a workflow naming what it produced)."""
    with write_session() as session:
        run = _locked_run(session, run_id)
        if run.status.is_terminal:
            raise InvalidTransition(f"run {run_id} is already {run.status.value}")
        run.outcome = {**(run.outcome or {}), **_plain(outcome)}
        run.updated_at = utcnow()
        session.add(run)
    return run


def lineage_id(run_id: str) -> str:
    """The id of the first attempt of a run: what every retry of it has in common."""
    with read_session() as session:
        current: str | None = run_id
        while current is not None:
            run_id = current
            current = session.exec(select(JobRun.retry_of).where(JobRun.id == current)).first()
    return run_id


def request_cancel(
    run_id: str, organization_id: str | None = None, *, info: str | None = None
) -> JobRun:
    """Ask the engine to stop the run (``info``: why, kept as the run's ``info``)."""
    with write_session() as session:
        run = _locked_run(session, run_id, organization_id)
        if run.status.is_terminal:
            raise InvalidTransition(f"run {run_id} is already {run.status.value}")
        run.cancel_requested_at = run.cancel_requested_at or utcnow()
        run.info = info or run.info
        run.updated_at = utcnow()
        session.add(run)
    return run


def is_cancel_requested(run_id: str) -> bool:
    with read_session() as session:
        requested = session.exec(
            select(JobRun.cancel_requested_at).where(JobRun.id == run_id)
        ).first()
    return requested is not None


def start_workflow_run(workflow_run_id: str, *, prefect_flow_run_id: str | None = None) -> None:
    """A step starts: it becomes the run's current workflow, named in ``info`` and announced
    with `job:updated`."""
    with write_session() as session:
        step = _get_workflow_run(session, workflow_run_id, lock=True)
        run = _locked_run(session, step.run_id)
        step.status = WorkflowRunStatus.RUNNING
        step.started_at = step.started_at or utcnow()
        if prefect_flow_run_id:
            step.prefect_flow_run_id = prefect_flow_run_id
        session.add(step)
        run.info = f"running {step.name} (step {step.position + 1})"
        run.updated_at = utcnow()
        session.add(run)
        _emit(session, None, run, Topic.UPDATED, _run_payload(run, step))


def finish_workflow_run(
    workflow_run_id: str,
    status: WorkflowRunStatus,
    *,
    error: str | None = None,
) -> JobRun:
    """End a step. A COMPLETED step counts all its parts as processed and emits `job:updated`."""
    with write_session() as session:
        # Lock order everywhere: step, then run. Reading the step unlocked would let
        # concurrent reports write back a stale count (lost updates on PostgreSQL).
        step = _get_workflow_run(session, workflow_run_id, lock=True)
        run = _locked_run(session, step.run_id)
        step.status = status
        step.error = error
        step.finished_at = utcnow()
        if status is WorkflowRunStatus.COMPLETED:
            run.processed += step.parts - step.processed
            step.processed = step.parts
        session.add(step)
        run.progress = max(run.progress, _progress(run.processed, run.parts))
        run.updated_at = utcnow()
        session.add(run)
        if status is WorkflowRunStatus.COMPLETED:
            _emit(session, None, run, Topic.UPDATED, _run_payload(run, step))
    return run


def mark_not_run(run_id: str, from_position: int) -> None:
    with write_session() as session:
        for step in _workflow_runs(session, run_id):
            if step.position >= from_position and not step.status.is_terminal:
                step.status = WorkflowRunStatus.NOT_RUN
                session.add(step)


def report_progress(
    workflow_run_id: str,
    *,
    parts: int | None = None,
    advance: int = 0,
    fraction: float | None = None,
    info: str | None = None,
    emit: bool = True,
) -> JobRun:
    """Progress reported by a running workflow through its run context.

    ``parts`` (re)declares how many parts this step has (never fewer than it processed);
    ``advance`` counts newly finished parts; ``fraction`` (0..1) reports progress within the
    step's remaining parts. The run's ``progress`` never goes down; ``processed <= parts``.
    """
    with write_session() as session:
        # Lock order everywhere: step, then run. Reading the step unlocked would let
        # concurrent reports write back a stale count (lost updates on PostgreSQL).
        step = _get_workflow_run(session, workflow_run_id, lock=True)
        run = _locked_run(session, step.run_id)
        before = (run.parts, run.processed, run.progress, run.info)
        if parts is not None:
            new_parts = max(parts, step.processed, 1)
            run.parts += new_parts - step.parts
            step.parts = new_parts
        if advance:
            done = min(max(advance, 0), step.parts - step.processed)
            step.processed += done
            run.processed += done
        computed = _progress(run.processed, run.parts)
        if fraction is not None and run.parts:
            remaining = step.parts - step.processed
            partial = run.processed + min(max(fraction, 0.0), 1.0) * remaining
            computed = min(99, int(100 * partial / run.parts))
        run.progress = max(run.progress, min(computed, 99))
        if info is not None:
            run.info = info
        run.updated_at = utcnow()
        session.add(step)
        session.add(run)
        if emit and (run.parts, run.processed, run.progress, run.info) != before:
            _emit(session, None, run, Topic.UPDATED, _run_payload(run, step))
    return run


def report_run_progress(
    run_id: str,
    *,
    parts: int | None = None,
    progress: int | None = None,
    info: str | None = None,
) -> JobRun:
    """Progress of a run its caller reports (a ``managed: false`` job, which has no workflow
    runs): ``parts`` (never fewer than processed), ``progress`` 0..100 (never lower than it
    was; ``processed`` follows it) and ``info``. Emits ``job:updated`` when anything changed."""
    with write_session() as session:
        run = _locked_run(session, run_id)
        if run.status.is_terminal:
            raise InvalidTransition(f"run {run_id} is already {run.status.value}")
        before = (run.parts, run.processed, run.progress, run.info)
        if parts is not None:
            run.parts = max(parts, run.processed, 1)
        if progress is not None:
            run.progress = max(run.progress, min(progress, 99))
        run.processed = max(run.processed, run.parts * run.progress // 100)
        if info is not None:
            run.info = info
        if (run.parts, run.processed, run.progress, run.info) != before:
            run.updated_at = utcnow()
            session.add(run)
            _emit(session, None, run, Topic.UPDATED, _run_payload(run))
    return run


def acknowledge_outcome(run_id: str, organization_id: str, *, actor: str | None = None) -> JobRun:
    """A person has seen how the run ended (Flatfile's ``outcome/ack``): stamps
    ``outcomeAcknowledgedAt`` once and emits ``job:outcome-acknowledged``."""
    with write_session() as session:
        run = _locked_run(session, run_id, organization_id)
        if not run.status.is_terminal:
            raise InvalidTransition(f"run {run_id} is {run.status.value}: it has no outcome yet")
        if run.outcome_acknowledged_at is None:
            run.outcome_acknowledged_at = utcnow()
            session.add(run)
            payload = _run_payload(run) | {"acknowledgedBy": actor}
            _emit(session, None, run, Topic.OUTCOME_ACKNOWLEDGED, payload)
    return run


def beat(run_id: str) -> None:
    """The process running the run is alive (``heartbeat_at``; no event)."""
    with write_session() as session:
        session.execute(
            sa.update(JobRun)
            .where(
                col(JobRun.id) == run_id,
                col(JobRun.status).in_([s.value for s in JobStatus if not s.is_terminal]),
            )
            .values(heartbeat_at=utcnow())
        )


def stale_runs(older_than: datetime, limit: int = 100) -> list[JobRun]:
    """Unfinished runs of managed jobs, of every organization, whose last sign of life
    (heartbeat, else start, else creation) is older than ``older_than``; what the reconciler
    looks at. Runs of ``managed: false`` jobs are their callers' and never looked at."""
    alive = sa.func.coalesce(JobRun.heartbeat_at, JobRun.started_at, JobRun.created_at)
    with read_session() as session:
        return list(
            session.exec(
                select(JobRun)
                .join(Job, col(Job.id) == col(JobRun.job_id))
                .where(
                    col(JobRun.status).in_([s.value for s in JobStatus if not s.is_terminal]),
                    alive < older_than,
                    col(Job.managed).is_(True),
                )
                .order_by(col(JobRun.created_at))
                .limit(limit)
            ).all()
        )


def end_stale_run(
    run_id: str,
    older_than: datetime,
    state_type: Any,
    state_name: str,
    message: str,
) -> JobRun | None:
    """End an unfinished run in the given (Prefect) state, unless it showed a sign of life
    after ``older_than`` meanwhile; its running workflow becomes FAILED (CANCELED when the run
    is) and the workflows after it NOT_RUN, so a retry starts at the interrupted one. ``None``
    when nothing was done (it ended or came alive): safe to call from several reconcilers at
    once."""
    with write_session() as session:
        run = _locked_run(session, run_id)
        if run.status.is_terminal or run.last_sign_of_life >= older_than:
            return None
        canceled = state_type in (StateType.CANCELLED, StateType.CANCELLING)
        step_status = WorkflowRunStatus.CANCELED if canceled else WorkflowRunStatus.FAILED
        _end_steps(session, run, step_status, message)
        _apply_state(session, run, state_type, state_name, message)
    return run


def end_interrupted_run(run_id: str, message: str) -> JobRun:
    """End a run whose process is being stopped by a Prefect cancel (the UI's Cancel button):
    CANCELED, its running workflow CANCELED and the ones after it NOT_RUN."""
    with write_session() as session:
        run = _locked_run(session, run_id)
        if not run.status.is_terminal:
            _end_steps(session, run, WorkflowRunStatus.CANCELED, message)
            _apply_state(session, run, StateType.CANCELLED, "Cancelled", message)
    return run


def _end_steps(session: Session, run: JobRun, running: WorkflowRunStatus, message: str) -> None:
    """The running workflow of an interrupted run ends ``running``, the ones after NOT_RUN."""
    now = utcnow()
    for step in _workflow_runs(session, run.id):
        if step.status is WorkflowRunStatus.RUNNING:
            step.status = running
            step.error = message
            step.finished_at = now
            session.add(step)
        elif step.status is WorkflowRunStatus.PENDING:
            step.status = WorkflowRunStatus.NOT_RUN
            session.add(step)


def unfinished_runs(job_id: str, organization_id: str) -> list[JobRun]:
    """The job's runs that have not ended (``JobNotFound`` for an unknown job)."""
    get_job(job_id, organization_id)
    with read_session() as session:
        return list(
            session.exec(
                select(JobRun).where(
                    JobRun.job_id == job_id,
                    col(JobRun.status).in_([s.value for s in JobStatus if not s.is_terminal]),
                )
            ).all()
        )


def _get_workflow_run(session: Session, workflow_run_id: str, lock: bool = False) -> WorkflowRun:
    query = select(WorkflowRun).where(WorkflowRun.id == workflow_run_id)
    step = session.exec(query.with_for_update() if lock else query).first()
    if step is None:
        raise RunNotFound(workflow_run_id)
    return step


def _progress(processed: int, parts: int) -> int:
    return int(100 * processed / parts) if parts else 0


def _sync_job_status(session: Session, run: JobRun) -> None:
    job = session.get(Job, run.job_id)
    if job is not None and job.last_run_id == run.id:
        job.status = run.status
        session.add(job)


# --------------------------------------------------------------------------- events


def _run_payload(run: JobRun, step: WorkflowRun | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "status": run.status.value,
        "parts": run.parts,
        "processed": run.processed,
        "progress": run.progress,
        "info": run.info,
        "attempt": run.attempt,
        "jobVersion": run.job_version,
    }
    if run.outcome:
        payload["outcome"] = run.outcome
    if step is not None:
        payload["workflow"] = {
            "id": step.workflow_id,
            "position": step.position,
            "status": step.status.value,
            "parts": step.parts,
            "processed": step.processed,
        }
    return payload


def _emit(
    session: Session, job: Job | None, run: JobRun | None, topic: Topic, payload: dict[str, Any]
) -> Event:
    """Insert one event in the caller's transaction, next in its run's (or job's) sequence."""
    job_id = run.job_id if run is not None else job.id if job is not None else ""
    organization_id = (
        run.organization_id if run is not None else job.organization_id if job is not None else ""
    )
    run_id = run.id if run is not None else None
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        # Serialize event writers so that cursor order is commit order (streams never skip).
        session.exec(select(func.pg_advisory_xact_lock(_EVENT_LOCK_KEY)))
    last = session.exec(
        select(func.max(Event.sequence)).where(
            Event.job_id == job_id,
            Event.run_id == run_id if run_id is not None else col(Event.run_id).is_(None),
        )
    ).one()
    context = {"organizationId": organization_id, "jobId": job_id}
    if run_id is not None:
        context["runId"] = run_id
    event = Event(
        id=ids.new_id(ids.EVENT),
        organization_id=organization_id,
        topic=topic.value,
        job_id=job_id,
        run_id=run_id,
        sequence=(last or 0) + 1,
        context=context,
        payload=payload,
    )
    session.add(event)
    session.flush()
    webhooks.enqueue(session, event)
    session.info.setdefault(EVENTS_WRITTEN, []).append(event)
    return event


def _event_query(
    organization_id: str,
    *,
    job_id: str | None,
    run_id: str | None,
    topic: str | None,
    domain: str | None,
    after_cursor: int | None,
    since: datetime | None,
    include_acknowledged: bool,
) -> SelectOfScalar[Event]:
    query = select(Event).where(Event.organization_id == organization_id)
    if job_id is not None:
        query = query.where(Event.job_id == job_id)
    if run_id is not None:
        query = query.where(Event.run_id == run_id)
    if topic is not None:
        query = query.where(Event.topic == topic)
    if domain is not None:
        query = query.where(Event.domain == domain)
    if after_cursor is not None:
        query = query.where(col(Event.cursor) > after_cursor)
    if since is not None:
        query = query.where(col(Event.created_at) >= since)
    if not include_acknowledged:
        query = query.where(col(Event.acknowledged_at).is_(None))
    return query


def list_events(
    organization_id: str,
    *,
    job_id: str | None = None,
    run_id: str | None = None,
    topic: str | None = None,
    domain: str | None = None,
    after_cursor: int | None = None,
    since: datetime | None = None,
    include_acknowledged: bool = True,
    limit: int = 100,
    offset: int = 0,
) -> list[Event]:
    """Events in catalog order (cursor), oldest first."""
    query = _event_query(
        organization_id,
        job_id=job_id,
        run_id=run_id,
        topic=topic,
        domain=domain,
        after_cursor=after_cursor,
        since=since,
        include_acknowledged=include_acknowledged,
    )
    with read_session() as session:
        return list(
            session.exec(query.order_by(col(Event.cursor)).offset(offset).limit(limit)).all()
        )


def count_events(
    organization_id: str,
    *,
    job_id: str | None = None,
    run_id: str | None = None,
    topic: str | None = None,
    domain: str | None = None,
    after_cursor: int | None = None,
    since: datetime | None = None,
    include_acknowledged: bool = True,
) -> int:
    query = _event_query(
        organization_id,
        job_id=job_id,
        run_id=run_id,
        topic=topic,
        domain=domain,
        after_cursor=after_cursor,
        since=since,
        include_acknowledged=include_acknowledged,
    )
    with read_session() as session:
        return int(session.exec(select(func.count()).select_from(query.subquery())).one())


def events_after(after_cursor: int, limit: int = 500) -> list[Event]:
    """Events of every organization after a cursor: what one live-stream poller fans out."""
    with read_session() as session:
        return list(
            session.exec(
                select(Event)
                .where(col(Event.cursor) > after_cursor)
                .order_by(col(Event.cursor))
                .limit(limit)
            ).all()
        )


def acknowledge_event(event_id: str, organization_id: str, *, actor: str | None = None) -> Event:
    """Mark an event handled (idempotent: the first acknowledgement's time stays)."""
    with write_session() as session:
        event = session.exec(
            select(Event).where(Event.id == event_id, Event.organization_id == organization_id)
        ).first()
        if event is None:
            raise EventNotFound(event_id)
        if event.acknowledged_at is None:
            event.acknowledged_at = utcnow()
            event.acknowledged_by = actor
            session.add(event)
    return event


def get_event(event_id: str, organization_id: str) -> Event:
    with read_session() as session:
        event = session.exec(
            select(Event).where(Event.id == event_id, Event.organization_id == organization_id)
        ).first()
    if event is None:
        raise EventNotFound(event_id)
    return event


def latest_cursor() -> int:
    with read_session() as session:
        return int(session.exec(select(func.max(Event.cursor))).one() or 0)


# --------------------------------------------------------------------------- API keys

API_KEY_PREFIX = "pj_"


def hash_key(secret: str) -> str:
    """sha256 hex of a secret. Secrets are 32 random bytes, so a fast hash is enough."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(organization_id: str, name: str | None = None) -> tuple[ApiKey, str]:
    """A new key of the organization and its secret; the secret is not kept and not shown again."""
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    with write_session() as session:
        key = ApiKey(
            id=ids.new_id(ids.API_KEY),
            organization_id=organization_id,
            name=name,
            prefix=secret[:8],
            key_hash=hash_key(secret),
        )
        session.add(key)
    return key, secret


def organization_for_key(secret: str) -> tuple[Organization, str]:
    """The organization of an active key and the key's id; ``AuthenticationError`` for an
    unknown or revoked one."""
    with read_session() as session:
        found = session.exec(
            select(Organization, ApiKey.id)
            .join(ApiKey, col(ApiKey.organization_id) == col(Organization.id))
            .where(ApiKey.key_hash == hash_key(secret), col(ApiKey.revoked_at).is_(None))
        ).first()
    if found is None:
        raise AuthenticationError("invalid or revoked API key")
    return found[0], found[1]


def list_api_keys(organization_id: str) -> list[ApiKey]:
    with read_session() as session:
        return list(
            session.exec(
                select(ApiKey)
                .where(ApiKey.organization_id == organization_id)
                .order_by(col(ApiKey.created_at), col(ApiKey.id))
            ).all()
        )


def revoke_api_key(key_id: str, organization_id: str) -> ApiKey:
    """Revoke a key of the organization (idempotent); ``ApiKeyNotFound`` for anyone else's."""
    with write_session() as session:
        key = session.get(ApiKey, key_id)
        if key is None or key.organization_id != organization_id:
            raise ApiKeyNotFound(key_id)
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            session.add(key)
        return key
