"""Job schedules: when a job runs by itself. Kept here, pushed to Prefect as the schedules of
the job's deployment by ``jobs_plugin.prefect_deployments`` (the catalog is the truth)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlmodel import Session, col, select

from jobs_plugin import ids
from jobs_plugin.catalog.core import _emit, _job_query, _locked_job
from jobs_plugin.db import read_session, write_session
from jobs_plugin.errors import JobNotFound, ScheduleNotFound
from jobs_plugin.models import (
    Job,
    JobSchedule,
    JobScheduleCreate,
    JobScheduleUpdate,
    Organization,
    utcnow,
)
from jobs_plugin.translation import Topic

_FIELDS = ("cron", "interval_seconds", "timezone", "active")


def new_schedule(job_id: str, spec: JobScheduleCreate) -> JobSchedule:
    """A schedule row for ``job_id``, not saved yet (``set_schedules`` saves it)."""
    return JobSchedule(id=ids.new_id(ids.SCHEDULE), job_id=job_id, **spec.model_dump())


def changed_schedule(row: JobSchedule, changes: JobScheduleUpdate) -> JobSchedule:
    """A copy of ``row`` with ``changes`` applied and checked as a whole, not saved yet."""
    data = {name: getattr(row, name) for name in _FIELDS}
    data.update(changes.model_dump(exclude_unset=True))
    if "cron" in changes.model_fields_set and changes.cron is not None:
        data["interval_seconds"] = None  # switching kind: the other one goes
    if "interval_seconds" in changes.model_fields_set and changes.interval_seconds is not None:
        data["cron"] = None
    spec = JobScheduleCreate.model_validate(data)
    return JobSchedule(id=row.id, job_id=row.job_id, created_at=row.created_at, **spec.model_dump())


def _rows(session: Session, job_id: str) -> list[JobSchedule]:
    query = select(JobSchedule).where(JobSchedule.job_id == job_id)
    return list(session.exec(query.order_by(col(JobSchedule.created_at), col(JobSchedule.id))))


def list_schedules(job_id: str, organization_id: str) -> list[JobSchedule]:
    with read_session() as session:
        if session.exec(_job_query(organization_id).where(Job.id == job_id)).first() is None:
            raise JobNotFound(job_id)
        return _rows(session, job_id)


def get_schedule(job_id: str, schedule_id: str, organization_id: str) -> JobSchedule:
    for row in list_schedules(job_id, organization_id):
        if row.id == schedule_id:
            return row
    raise ScheduleNotFound(schedule_id)


def schedules_of(job_ids: Sequence[str]) -> dict[str, list[JobSchedule]]:
    """The schedules of each of ``job_ids`` (one query, for a page of jobs)."""
    found: dict[str, list[JobSchedule]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return found
    with read_session() as session:
        query = select(JobSchedule).where(col(JobSchedule.job_id).in_(list(job_ids)))
        for row in session.exec(query.order_by(col(JobSchedule.created_at), col(JobSchedule.id))):
            found[row.job_id].append(row)
    return found


def replace_in(session: Session, job: Job, rows: Sequence[JobSchedule], actor: str | None) -> bool:
    """Make ``job``'s schedules exactly ``rows``, in the caller's transaction; whether anything
    changed (then ``job:updated`` says ``changed: ["schedules"]``)."""
    current = {row.id: row for row in _rows(session, job.id)}
    wanted = {row.id: row for row in rows}
    changed = False
    for schedule_id, row in current.items():
        if schedule_id not in wanted:
            session.delete(row)
            changed = True
    now = utcnow()
    for order, (schedule_id, row) in enumerate(wanted.items()):
        old = current.get(schedule_id)
        if old is None:
            # Listed by creation time: schedules added together keep the order they came in.
            created = now + timedelta(microseconds=order)
            session.add(
                JobSchedule(
                    id=row.id,
                    job_id=job.id,
                    created_at=created,
                    updated_at=created,
                    **{name: getattr(row, name) for name in _FIELDS},
                )
            )
            changed = True
        elif any(getattr(old, name) != getattr(row, name) for name in _FIELDS):
            for name in _FIELDS:
                setattr(old, name, getattr(row, name))
            old.updated_at = now
            session.add(old)
            changed = True
    if changed:
        session.flush()
        _emit(session, job, None, Topic.UPDATED, {"version": job.version, "changed": ["schedules"]})
    return changed


def set_schedules(
    job_id: str, organization_id: str, rows: Sequence[JobSchedule], *, actor: str | None = None
) -> list[JobSchedule]:
    """Replace all of the job's schedules with ``rows`` in one transaction."""
    with write_session() as session:
        job = _locked_job(session, job_id, organization_id)
        replace_in(session, job, rows, actor)
    return list_schedules(job_id, organization_id)


def scheduled_jobs() -> list[tuple[Job, list[JobSchedule], str]]:
    """Every live job that has schedules, with them and its organization's name."""
    with read_session() as session:
        rows = session.exec(
            select(Job, JobSchedule, Organization)
            .join(JobSchedule, col(JobSchedule.job_id) == col(Job.id))
            .join(Organization, col(Organization.id) == col(Job.organization_id))
            .where(col(Job.deleted_at).is_(None))
            .order_by(col(Job.id), col(JobSchedule.created_at), col(JobSchedule.id))
        ).all()
    grouped: dict[str, tuple[Job, list[JobSchedule], str]] = {}
    for job, schedule, organization in rows:
        grouped.setdefault(job.id, (job, [], organization.name))[1].append(schedule)
    return list(grouped.values())
