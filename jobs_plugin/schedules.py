"""Job schedules, the Python API (``jobs_plugin.schedule_job``...).

Every change is applied to the job's Prefect deployment first and saved in the catalog after:
a change Prefect refuses (no server, no job-runner deployment on a work pool) raises
``ExecutionError`` and leaves nothing behind; if the save then fails, the deployment is put
back as it was. Creating, updating and deleting jobs goes through ``apply`` and ``save`` too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from prefect.utilities.asyncutils import run_coro_as_sync
from pydantic import BaseModel

from jobs_plugin import catalog, prefect_deployments
from jobs_plugin.models import (
    Job,
    JobSchedule,
    JobScheduleCreate,
    JobSchedulePublic,
    JobScheduleUpdate,
)
from jobs_plugin.settings import get_settings

logger = logging.getLogger("prefect_jobs.schedules")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def _organization(organization: str | None) -> tuple[str, str]:
    """(id, name) of the organization (the Python API's own lookup, imported late: the API
    module imports this one)."""
    from jobs_plugin.api import organization_id

    name = organization or get_settings().default_organization
    return organization_id(name), name


def public(row: JobSchedule) -> JobSchedulePublic:
    return JobSchedulePublic.model_validate(row)


def rows_for(
    job_id: str, specs: Sequence[JobScheduleCreate], current: Sequence[JobSchedule] = ()
) -> list[JobSchedule]:
    """Rows for ``specs``; a spec equal to a current schedule keeps that schedule (its id)."""
    free = list(current)
    rows = []
    for spec in specs:
        same = next((row for row in free if _same(row, spec)), None)
        if same is not None:
            free.remove(same)
            rows.append(same)
        else:
            rows.append(catalog.new_schedule(job_id, spec))
    return rows


def _same(row: JobSchedule, spec: JobScheduleCreate) -> bool:
    return all(
        getattr(row, name) == getattr(spec, name)
        for name in ("cron", "interval_seconds", "timezone", "active")
    )


def apply(job: Job, rows: Sequence[JobSchedule], organization: str) -> str | None:
    """Push ``rows`` as the job's deployment (deleted when empty); its name or ``None``."""
    return run_coro_as_sync(prefect_deployments.apply_job(job, rows, organization))


def put_back(job: Job, rows: Sequence[JobSchedule], organization: str) -> None:
    """Best effort after a failed save: the deployment as the catalog still has it."""
    try:
        apply(job, rows, organization)
    except Exception as exc:
        logger.error("job %s: could not put its deployment back: %s", job.id, exc)


def save(
    job: Job,
    before: Sequence[JobSchedule],
    after: Sequence[JobSchedule],
    organization: str,
    write: Callable[[], T],
) -> T:
    """Apply ``after`` to Prefect (when there is anything to say), then ``write`` the catalog;
    if that fails, put ``before`` back."""
    if not before and not after:
        return write()
    apply(job, after, organization)
    try:
        return write()
    except BaseException:
        put_back(job, before, organization)
        raise


def remove(job_id: str) -> None:
    """Best effort after a job is deleted: its deployment (and scheduled runs) go too."""
    try:
        run_coro_as_sync(prefect_deployments.remove_job(job_id))
    except Exception as exc:
        logger.warning("job %s: could not delete its Prefect deployment: %s", job_id, exc)


def _replace(
    job_id: str,
    organization: str | None,
    change: Callable[[list[JobSchedule]], list[JobSchedule]],
    actor: str | None,
) -> list[JobSchedule]:
    org_id, org_name = _organization(organization)
    job = catalog.get_job(job_id, org_id)
    before = catalog.list_schedules(job_id, org_id)
    after = change(list(before))
    return save(
        job,
        before,
        after,
        org_name,
        lambda: catalog.set_schedules(job_id, org_id, after, actor=actor),
    )


def _model(cls: type[M], spec: M | dict[str, Any] | None, fields: dict[str, Any]) -> M:
    from jobs_plugin.api import model_from

    return model_from(cls, spec, fields)


# --------------------------------------------------------------------------- public


def list_schedules(job_id: str, *, organization: str | None = None) -> list[JobSchedulePublic]:
    return [public(r) for r in catalog.list_schedules(job_id, _organization(organization)[0])]


def get_schedule(
    job_id: str, schedule_id: str, *, organization: str | None = None
) -> JobSchedulePublic:
    return public(catalog.get_schedule(job_id, schedule_id, _organization(organization)[0]))


def schedule_job(
    job_id: str,
    spec: JobScheduleCreate | dict[str, Any] | None = None,
    *,
    organization: str | None = None,
    actor: str | None = None,
    **fields: Any,
) -> JobSchedulePublic:
    """Add a schedule: ``schedule_job(job_id, cron="0 6 * * *", timezone="Europe/Berlin")``
    or ``interval_seconds=3600``. The job's deployment is created with its first schedule."""
    schedule = catalog.new_schedule(job_id, _model(JobScheduleCreate, spec, fields))
    _replace(job_id, organization, lambda rows: [*rows, schedule], actor)
    return public(catalog.get_schedule(job_id, schedule.id, _organization(organization)[0]))


def update_schedule(
    job_id: str,
    schedule_id: str,
    changes: JobScheduleUpdate | dict[str, Any] | None = None,
    *,
    organization: str | None = None,
    actor: str | None = None,
    **fields: Any,
) -> JobSchedulePublic:
    """Change a schedule; ``active=False`` pauses it, ``active=True`` resumes it."""
    update = _model(JobScheduleUpdate, changes, fields)
    row = catalog.get_schedule(job_id, schedule_id, _organization(organization)[0])
    new = catalog.changed_schedule(row, update)
    _replace(
        job_id, organization, lambda rows: [new if r.id == schedule_id else r for r in rows], actor
    )
    return public(catalog.get_schedule(job_id, schedule_id, _organization(organization)[0]))


def set_active(
    job_id: str,
    schedule_id: str | None,
    active: bool,
    *,
    organization: str | None = None,
    actor: str | None = None,
) -> list[JobSchedulePublic]:
    """Pause (``active=False``) or resume one schedule of the job, or all of them."""
    if schedule_id is not None:
        catalog.get_schedule(job_id, schedule_id, _organization(organization)[0])

    def change(rows: list[JobSchedule]) -> list[JobSchedule]:
        changed = []
        for row in rows:
            if schedule_id in (None, row.id):
                row = catalog.changed_schedule(row, JobScheduleUpdate(active=active))
            changed.append(row)
        return changed

    return [public(r) for r in _replace(job_id, organization, change, actor)]


def pause_schedules(
    job_id: str, schedule_id: str | None = None, *, organization: str | None = None
) -> list[JobSchedulePublic]:
    return set_active(job_id, schedule_id, False, organization=organization)


def resume_schedules(
    job_id: str, schedule_id: str | None = None, *, organization: str | None = None
) -> list[JobSchedulePublic]:
    return set_active(job_id, schedule_id, True, organization=organization)


def delete_schedule(
    job_id: str, schedule_id: str, *, organization: str | None = None, actor: str | None = None
) -> None:
    """Remove a schedule; with the last one, the job's deployment goes."""
    catalog.get_schedule(job_id, schedule_id, _organization(organization)[0])
    _replace(job_id, organization, lambda rows: [r for r in rows if r.id != schedule_id], actor)


def sync_schedules() -> list[str]:
    """Push every job's schedules to Prefect and delete deployments of jobs without any (after
    ``prefect deploy`` moved the job runner, or against a new Prefect database). Returns the
    job deployments kept."""
    return run_coro_as_sync(prefect_deployments.sync_all(catalog.scheduled_jobs()))
