"""The Python API: what ``jobs_plugin`` exports. Synchronous functions over the catalog and the
engine; ``a``-prefixed coroutines for callers already inside an event loop.

Every function takes an optional ``organization`` (a name; default: the settings'
``default_organization``) and returns public schemas (``JobPublic``, ``JobRunPublic``...).
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

from prefect import Flow
from prefect.client.schemas.objects import StateType
from prefect.utilities.asyncutils import run_coro_as_sync
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from jobs_plugin import (
    catalog,
    compiler,
    dispatch,
    engine,
    ids,
    planner,
    prefect_deployments,
    registry,
    schedules,
)
from jobs_plugin.errors import InvalidTransition, ValidationError
from jobs_plugin.events import Subscription
from jobs_plugin.models import (
    MAX_VERSION,
    ApiKeyPublic,
    DeliveryStatus,
    EventPublic,
    Isolation,
    Job,
    JobConfigJson,
    JobCreate,
    JobPublic,
    JobRun,
    JobRunPublic,
    JobSchedule,
    JobSchedulePublic,
    JobUpdate,
    JobVersionPublic,
    Page,
    Trigger,
    WebhookCreate,
    WebhookDeliveryPublic,
    WebhookPublic,
    WebhookUpdate,
    WorkflowCreate,
    WorkflowPublic,
    WorkflowRun,
    WorkflowRunPublic,
    check_page,
)
from jobs_plugin.settings import get_settings
from jobs_plugin.translation import JobStatus

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
logger = logging.getLogger("prefect_jobs")
_bootstrapped: set[str] = set()
_bootstrap_lock = threading.Lock()


def _sync(coro: Coroutine[Any, Any, T]) -> T:
    return run_coro_as_sync(coro)


_organization_ids: dict[tuple[str, str], str] = {}
"""(catalog URL, organization name) -> id: organizations are never renamed or removed."""


def organization_id(organization: str | None = None) -> str:
    """The id of the organization called ``organization`` (created on first use)."""
    _bootstrap()
    settings = get_settings()
    name = organization or settings.default_organization
    key = (settings.resolved_database_url, name)
    found = _organization_ids.get(key)
    if found is None:
        found = _organization_ids[key] = catalog.ensure_organization(name).id
    return found


def _bootstrap() -> None:
    """Register the workflows of ``settings.workflow_modules`` once per process and catalog."""
    url = get_settings().resolved_database_url
    if url in _bootstrapped:
        return
    with _bootstrap_lock:
        if url in _bootstrapped:
            return
        _bootstrapped.add(url)
        for module in get_settings().workflow_modules:
            try:
                for spec in registry.declared_in(module):
                    _register(spec, None)
            except ImportError as exc:
                logger.warning("workflow module %s not importable: %s", module, exc)


# --------------------------------------------------------------------------- workflows


def _register(spec: WorkflowCreate, org_id: str | None) -> WorkflowPublic:
    flow = registry.load_flow(spec.entrypoint)
    saved = catalog.upsert_workflow(
        spec, organization_id=org_id, parameter_schema=registry.schema_of(flow)
    )
    return WorkflowPublic.model_validate(saved)


def register_workflow(
    flow_or_entrypoint: Flow[..., Any] | str,
    *,
    id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    isolation: Isolation | str | None = None,
    deployment: str | None = None,
    retries: int | None = None,
    retry_delay_seconds: float | None = None,
    timeout_seconds: float | None = None,
    organization: str | None = None,
    builtin: bool = False,
) -> WorkflowPublic:
    """Register (or update) a workflow in the catalog.

    ``flow_or_entrypoint``: a Prefect flow defined at module level (``@workflow`` settings are
    used as defaults) or an entrypoint ``path/to/file.py:flow`` / ``package.module:flow``.
    ``builtin=True`` makes it visible to every organization.
    """
    if isinstance(flow_or_entrypoint, str):
        flow, entrypoint = registry.load_flow(flow_or_entrypoint), flow_or_entrypoint
    else:
        flow, entrypoint = flow_or_entrypoint, registry.entrypoint_of(flow_or_entrypoint)
    declared = registry.declaration_of(flow)
    base = declared.model_dump() if declared else {}
    given = {
        "id": id,
        "name": name,
        "description": description,
        "isolation": isolation,
        "deployment": deployment,
        "retries": retries,
        "retry_delay_seconds": retry_delay_seconds,
        "timeout_seconds": timeout_seconds,
    }
    data = {
        "id": flow.name,
        "name": flow.name,
        "description": flow.description,
        **base,
        **{k: v for k, v in given.items() if v is not None},
        "entrypoint": entrypoint,
    }
    try:
        spec = WorkflowCreate.model_validate(data)
    except Exception as exc:
        raise _validation_error(exc) from exc
    return _register(spec, None if builtin else organization_id(organization))


def register_module(
    module: str, *, organization: str | None = None, builtin: bool = False
) -> list[WorkflowPublic]:
    """Import ``module`` and register every workflow it declares with ``@workflow``
    (``builtin=True``: visible to every organization)."""
    org_id = None if builtin else organization_id(organization)
    try:
        specs = registry.declared_in(module)
    except ImportError as exc:
        raise ValidationError("module", f"cannot import {module!r}: {exc}") from exc
    return [_register(spec, org_id) for spec in specs]


def list_workflows(*, organization: str | None = None) -> list[WorkflowPublic]:
    return [
        WorkflowPublic.model_validate(w)
        for w in catalog.list_workflows(organization_id(organization))
    ]


def get_workflow(workflow_id: str, *, organization: str | None = None) -> WorkflowPublic:
    return WorkflowPublic.model_validate(
        catalog.get_workflow(workflow_id, organization_id(organization))
    )


def deploy_workflow(
    workflow_id: str, *, pool: str | None = None, organization: str | None = None
) -> str:
    """Create or update the Prefect deployment of a workflow on the process work pool ``pool``
    (default: ``PREFECT_JOBS_WORK_POOL``), so that steps with ``isolation: deployment`` run it
    on that pool's workers. Returns its full name (``<flow name>/<workflow id>`` unless the
    workflow names its deployment)."""
    workflow = catalog.get_workflow(workflow_id, organization_id(organization))
    flow = registry.load_flow(workflow.entrypoint)
    return _sync(
        prefect_deployments.deploy_workflow(workflow, flow, pool or get_settings().work_pool)
    )


# --------------------------------------------------------------------------- jobs


def to_public(job: Job, schedule_rows: list[JobSchedule] | None = None) -> JobPublic:
    """The job as the API shows it, with its schedules (read here unless given)."""
    rows = catalog.schedules_of([job.id])[job.id] if schedule_rows is None else schedule_rows
    return JobPublic.model_validate(
        {
            **job.model_dump(),
            "job_config_json": JobConfigJson.model_validate(job.job_config_json or {}),
            "schedules": [JobSchedulePublic.model_validate(row) for row in rows],
            "prefect_deployment": dispatch.job_deployment(job.id) if rows else None,
        }
    )


def _page_public(page: Page[Job]) -> Page[JobPublic]:
    found = catalog.schedules_of([job.id for job in page.items])
    return page.map(lambda job: to_public(job, found[job.id]))


def _validation_error(exc: Exception) -> ValidationError:
    """A pydantic error as our ValidationError naming the first offending field (camelCase)."""
    from pydantic import ValidationError as PydanticValidationError
    from pydantic.alias_generators import to_camel

    if isinstance(exc, PydanticValidationError) and exc.errors():
        first = exc.errors()[0]
        where = ".".join(
            to_camel(p) if isinstance(p, str) else f"[{p}]" for p in first["loc"]
        ).replace(".[", "[")
        return ValidationError(where or "body", first["msg"])
    return ValidationError("body", str(exc))


def _job_spec(spec: JobCreate | dict[str, Any] | None, fields: dict[str, Any]) -> JobCreate:
    if isinstance(spec, JobCreate) and not fields:
        return spec
    data = spec.model_dump(by_alias=True) if isinstance(spec, JobCreate) else dict(spec or {})
    data.update(fields)
    try:
        return JobCreate.model_validate(data)
    except Exception as exc:
        raise _validation_error(exc) from exc


def _named(spec: JobCreate) -> JobCreate:
    """``spec`` with its name, which a job with an operation may leave out (as Flatfile's
    clients do): ``"<operation> <type> <source>"``."""
    if spec.name is not None:
        return spec
    if spec.operation is None:
        raise ValidationError("name", "is required for a job without an operation")
    parts = [spec.operation.value, spec.type.value if spec.type else None, spec.source]
    return spec.model_copy(update={"name": " ".join(p for p in parts if p)[:200]})


def local_actor() -> str:
    """The actor of what a local caller (the Python API, the CLI) does: ``local:<OS user>``."""
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this environment (some containers)
        return "local"


def create_job(
    spec: JobCreate | dict[str, Any] | None = None,
    *,
    organization: str | None = None,
    actor: str | None = None,
    wait: bool = False,
    **fields: Any,
) -> JobPublic:
    """Create a job from a ``JobCreate``, a dict (camelCase or snake_case) or keyword fields.

    The configuration is validated (workflow ids, parameters, type/operation) before anything
    is written. A ``trigger="immediate"`` job starts a run at once (``wait=True`` blocks until
    it ends).
    """
    job_spec = _named(_job_spec(spec, fields))
    org_id = organization_id(organization)
    actor = actor or local_actor()
    _validate(job_spec, org_id)
    job_id = ids.new_id(ids.JOB)
    rows = schedules.rows_for(job_id, job_spec.schedules)
    draft = Job(
        id=job_id,
        organization_id=org_id,
        **job_spec.model_dump(exclude={"job_config_json", "schedules"}),
    )
    job = schedules.save(
        draft,
        [],
        rows,
        organization or get_settings().default_organization,
        lambda: catalog.create_job(org_id, job_spec, actor=actor, job_id=job_id, schedules=rows),
    )
    if job.trigger is Trigger.IMMEDIATE:
        _sync(engine.execute(job.id, org_id, wait=wait, actor=actor))
        job = catalog.get_job(job.id, org_id)
    return to_public(job)


def _validate(spec: JobCreate | JobUpdate | Job, org_id: str) -> None:
    """Plan the job as a run would, so a job that cannot run is refused before it is saved. A
    job its caller runs (``managed: false``) has nothing for the engine to plan."""
    if spec.managed is False:
        return
    planner.plan(
        org_id,
        job_name=spec.name or "",
        job_type=spec.type,
        operation=spec.operation,
        job_config_json=spec.job_config_json,
        source=spec.source,
        destination=spec.destination,
        config=spec.config,
    )


def _status(status: JobStatus | str | None) -> JobStatus | None:
    """A status filter in either case (`failed`, as Flatfile spells it, or `FAILED`)."""
    if status is None or isinstance(status, JobStatus):
        return status
    try:
        return JobStatus(status.upper())
    except ValueError as exc:
        choices = ", ".join(s.value for s in JobStatus)
        raise ValidationError("status", f"must be one of {choices}") from exc


def get_job(job_id: str, *, organization: str | None = None) -> JobPublic:
    return to_public(catalog.get_job(job_id, organization_id(organization)))


def list_jobs(
    *,
    organization: str | None = None,
    page_number: int = 1,
    page_size: int = 50,
    status: JobStatus | str | None = None,
    source_provider: str | None = None,
    type: str | None = None,
    operation: str | None = None,
    source: str | None = None,
    touching: str | None = None,
    sort_direction: str = "desc",
) -> Page[JobPublic]:
    """A page of the organization's jobs, newest first unless ``sort_direction="asc"``.

    Filters: ``status`` (either case), ``source_provider``, ``type``, ``operation``,
    ``source`` (the id a job acts on) and ``touching`` (an id that is a job's source or
    destination)."""
    check_page(page_number, page_size)
    if sort_direction not in ("asc", "desc"):
        raise ValidationError("sortDirection", "must be 'asc' or 'desc'")
    wanted = _status(status)
    page = catalog.list_jobs(
        organization_id(organization),
        page_number=page_number,
        page_size=page_size,
        status=wanted,
        source_provider=source_provider,
        type=type,
        operation=operation,
        source=source,
        touching=touching,
        sort_direction=sort_direction,
    )
    return _page_public(page)


_NOT_NULL = frozenset({"name", "trigger", "managed", "overlap", "job_config_json"})
"""Fields of a job that an update may change but never clear."""


def update_job(
    job_id: str,
    changes: JobUpdate | dict[str, Any] | None = None,
    *,
    expected_version: int | None = None,
    organization: str | None = None,
    actor: str | None = None,
    **fields: Any,
) -> JobPublic:
    """Change a job; the result is validated as a whole before it is saved as a new version."""
    data = (
        changes.model_dump(by_alias=True, exclude_unset=True)
        if isinstance(changes, JobUpdate)
        else dict(changes or {})
    )
    data.update(fields)
    try:
        update = JobUpdate.model_validate(data)
    except Exception as exc:
        raise _validation_error(exc) from exc
    for name in update.model_fields_set & _NOT_NULL:
        if getattr(update, name) is None:
            raise ValidationError(to_camel(name), "must not be null")
    if expected_version is None:
        expected_version = update.version
    elif update.version is not None and update.version != expected_version:
        raise ValidationError("version", "differs from expected_version")
    if "schedules" in update.model_fields_set and update.schedules is None:
        raise ValidationError("schedules", "must not be null (`[]` removes them)")
    org_id = organization_id(organization)
    current = catalog.get_job(job_id, org_id)
    merged = current.model_copy(
        update=update.model_dump(exclude_unset=True, exclude={"version", "schedules"})
    )
    if update.job_config_json is not None:
        merged.job_config_json = update.job_config_json.model_dump(by_alias=True, mode="json")
    _validate(merged, org_id)
    before = catalog.list_schedules(job_id, org_id)
    after = (
        schedules.rows_for(job_id, update.schedules, before)
        if update.schedules is not None
        else before
    )
    job = schedules.save(
        merged,
        before,
        after,
        organization or get_settings().default_organization,
        lambda: catalog.update_job(
            job_id,
            org_id,
            update,
            expected_version=expected_version,
            actor=actor or local_actor(),
            schedules=after if update.schedules is not None else None,
        ),
    )
    return to_public(job)


def delete_job(
    job_id: str,
    *,
    force: bool = False,
    organization: str | None = None,
    actor: str | None = None,
    stop_timeout: float = 60.0,
) -> None:
    """Soft-delete a job. A job with an unfinished run is refused (``InvalidTransition``)
    unless ``force``: then its runs are canceled first, and the job is deleted once they have
    stopped (``InvalidTransition`` if they have not within ``stop_timeout`` seconds)."""
    org_id = organization_id(organization)
    if force:
        runs = catalog.unfinished_runs(job_id, org_id)
        for run in runs:
            with contextlib.suppress(InvalidTransition):  # it ended meanwhile
                engine.cancel(run.id, org_id)
        deadline = time.monotonic() + stop_timeout
        while runs and time.monotonic() < deadline:
            time.sleep(0.05)
            runs = catalog.unfinished_runs(job_id, org_id)
    catalog.delete_job(job_id, org_id, actor=actor or local_actor())
    if catalog.schedules_of([job_id])[job_id]:
        schedules.remove(job_id)


def list_versions(job_id: str, *, organization: str | None = None) -> list[JobVersionPublic]:
    return [
        JobVersionPublic.model_validate(v)
        for v in catalog.list_versions(job_id, organization_id(organization))
    ]


def compile_job(
    job_id: str, *, version: int | None = None, organization: str | None = None
) -> Flow[..., Any]:
    """The Prefect flow a job compiles to (its current version, or ``version``)."""
    org_id = organization_id(organization)
    if version is None:
        return compiler.compile_job(catalog.get_job(job_id, org_id))
    return compiler.compile_job(catalog.get_version(job_id, org_id, version).snapshot)


def _check_version(version: int | None) -> None:
    if version is not None and not 1 <= version <= MAX_VERSION:
        raise ValidationError("version", f"must be from 1 to {MAX_VERSION}")


def plan(
    job_id: str, *, version: int | None = None, organization: str | None = None
) -> list[dict[str, Any]]:
    """The resolved workflows of a job (its current or a given version), with validated
    parameters, as a run would execute them; empty for a job its caller runs."""
    org_id = organization_id(organization)
    job = catalog.get_job(job_id, org_id)
    _check_version(version)
    snapshot = (
        catalog.snapshot_of(job)
        if version is None or version == job.version
        else catalog.get_version(job_id, org_id, version).snapshot
    )
    if not snapshot.get("managed", True):
        return []
    return [s.describe() for s in planner.plan_snapshot(snapshot)]


# --------------------------------------------------------------------------- unmanaged jobs


def _unmanaged_run(job_id: str, org_id: str, *, start: bool, actor: str | None) -> JobRun:
    """The active run of a job its caller runs; with ``start``, a new one if it has none."""
    job = catalog.get_job(job_id, org_id)
    if job.managed:
        raise InvalidTransition(
            f"job {job_id} is managed: its workflows report their own progress and outcome "
            "(ack, complete, fail and split are for jobs created with managed: false)"
        )
    run = catalog.get_run(job.last_run_id, org_id) if job.last_run_id else None
    if run is None or run.status.is_terminal:
        if not start:
            raise InvalidTransition(f"job {job_id} has no unfinished run")
        run = _sync(engine.execute(job_id, org_id, wait=True, actor=actor))
    return run


def ack_job(
    job_id: str,
    *,
    info: str | None = None,
    progress: int | None = None,
    organization: str | None = None,
    actor: str | None = None,
) -> JobPublic:
    """A caller-run job (``managed: false``) is being worked on: its run enters EXECUTING
    (``job:started``; a run is started if it has none) and takes ``info``/``progress``."""
    org_id = organization_id(organization)
    run = _unmanaged_run(job_id, org_id, start=True, actor=actor)
    catalog.observe_state(run.id, StateType.RUNNING, "Running")
    if info is not None or progress is not None:
        catalog.report_run_progress(run.id, info=info, progress=progress)
    return get_job(job_id, organization=organization)


def finish_job(
    job_id: str,
    *,
    succeeded: bool,
    outcome: dict[str, Any] | None = None,
    info: str | None = None,
    organization: str | None = None,
) -> JobPublic:
    """End the run of a caller-run job: COMPLETED (``job:completed``) or FAILED
    (``job:failed``), with the caller's ``outcome`` and ``info``."""
    org_id = organization_id(organization)
    run = _unmanaged_run(job_id, org_id, start=False, actor=None)
    if outcome:
        catalog.set_outcome(run.id, outcome)
    message = info or (outcome or {}).get("message")
    state = (StateType.COMPLETED, "Completed") if succeeded else (StateType.FAILED, "Failed")
    catalog.observe_state(run.id, *state, message=str(message) if message else None)
    return get_job(job_id, organization=organization)


def acknowledge_outcome(
    job_id: str, *, organization: str | None = None, actor: str | None = None
) -> JobPublic:
    """Mark the outcome of the job's latest (ended) run as seen."""
    org_id = organization_id(organization)
    job = catalog.get_job(job_id, org_id)
    if job.last_run_id is None:
        raise InvalidTransition(f"job {job_id} has never run")
    catalog.acknowledge_outcome(job.last_run_id, org_id, actor=actor)
    return get_job(job_id, organization=organization)


def split_job(
    job_id: str, *, parts: int, organization: str | None = None, actor: str | None = None
) -> JobPublic:
    """Declare how many parts the current run of a caller-run job has (a run is started if it
    has none); ``progress`` then counts them."""
    if parts < 1:
        raise ValidationError("parts", "must be 1 or more")
    org_id = organization_id(organization)
    run = _unmanaged_run(job_id, org_id, start=True, actor=actor)
    catalog.report_run_progress(run.id, parts=parts)
    return get_job(job_id, organization=organization)


# --------------------------------------------------------------------------- runs


def run_public(run: JobRun, steps: list[WorkflowRun] | None = None) -> JobRunPublic:
    """A run with its workflow runs (read here unless the caller fetched them already)."""
    if steps is None:
        steps = catalog.list_workflow_runs(run.id)
    return JobRunPublic.model_validate(
        {
            **run.model_dump(),
            "prefect_url": prefect_ui_url(run.prefect_flow_run_id),
            "workflow_runs": [
                WorkflowRunPublic.model_validate(
                    {**s.model_dump(), "prefect_url": prefect_ui_url(s.prefect_flow_run_id)}
                )
                for s in steps
            ],
        }
    )


def prefect_ui_url(flow_run_id: str | None) -> str | None:
    """The flow run's page in the Prefect UI; none without a Prefect server that has a UI (the
    temporary local server has none)."""
    if not flow_run_id:
        return None
    from prefect.utilities.urls import url_for

    return url_for("flow-run", obj_id=flow_run_id)


def _runs_public(runs: list[JobRun]) -> dict[str, JobRunPublic]:
    steps = catalog.workflow_runs_of([r.id for r in runs])
    return {r.id: run_public(r, steps[r.id]) for r in runs}


async def aexecute(
    job_id: str,
    *,
    version: int | None = None,
    wait: bool = True,
    organization: str | None = None,
    actor: str | None = None,
) -> JobRunPublic:
    _check_version(version)
    run = await engine.execute(
        job_id, organization_id(organization), version=version, wait=wait, actor=actor
    )
    return run_public(run)


def execute(
    job_id: str,
    *,
    version: int | None = None,
    wait: bool = True,
    organization: str | None = None,
    actor: str | None = None,
) -> JobRunPublic:
    """Run a job now in this process. ``wait=False`` returns the READY run at once."""
    return _sync(
        aexecute(job_id, version=version, wait=wait, organization=organization, actor=actor)
    )


def cancel(
    run_id: str, *, info: str | None = None, organization: str | None = None
) -> JobRunPublic:
    """Ask a run to stop (``info``: why, shown as the run's ``info``)."""
    return run_public(engine.cancel(run_id, organization_id(organization), info=info))


async def aretry(
    run_id: str, *, wait: bool = True, organization: str | None = None, actor: str | None = None
) -> JobRunPublic:
    run = await engine.retry(run_id, organization_id(organization), wait=wait, actor=actor)
    return run_public(run)


def retry(
    run_id: str, *, wait: bool = True, organization: str | None = None, actor: str | None = None
) -> JobRunPublic:
    """Run a FAILED or CANCELED run again from its first unfinished workflow."""
    return _sync(aretry(run_id, wait=wait, organization=organization, actor=actor))


def reconcile() -> list[JobRunPublic]:
    """End the unfinished runs, of every organization, whose process died (see
    ``jobs_plugin.reconciler``); the runs it ended. Idempotent."""
    from jobs_plugin.reconciler import reconcile_once

    return list(_runs_public(reconcile_once()).values())


def get_run(run_id: str, *, organization: str | None = None) -> JobRunPublic:
    return run_public(catalog.get_run(run_id, organization_id(organization)))


def get_runs(run_ids: list[str], *, organization: str | None = None) -> dict[str, JobRunPublic]:
    """Several runs by id, with their workflow runs, in two queries; unknown ids are left out."""
    runs = catalog.get_runs(run_ids, organization_id(organization))
    return _runs_public(list(runs.values()))


def list_runs(
    job_id: str | None = None,
    *,
    status: JobStatus | str | None = None,
    organization: str | None = None,
    page_number: int = 1,
    page_size: int = 50,
) -> Page[JobRunPublic]:
    check_page(page_number, page_size)
    org_id = organization_id(organization)
    if job_id is not None:
        catalog.get_job(job_id, org_id)
    page = catalog.list_runs(
        org_id,
        job_id=job_id,
        status=_status(status),
        page_number=page_number,
        page_size=page_size,
    )
    public = _runs_public(page.items)
    return page.map(lambda r: public[r.id])


def list_workflow_runs(run_id: str, *, organization: str | None = None) -> list[WorkflowRunPublic]:
    catalog.get_run(run_id, organization_id(organization))
    return [WorkflowRunPublic.model_validate(s) for s in catalog.list_workflow_runs(run_id)]


# --------------------------------------------------------------------------- events


def list_events(
    *,
    job_id: str | None = None,
    run_id: str | None = None,
    topic: str | None = None,
    domain: str | None = None,
    after: int | None = None,
    since: datetime | None = None,
    include_acknowledged: bool = True,
    limit: int = 100,
    offset: int = 0,
    organization: str | None = None,
) -> list[EventPublic]:
    """Events oldest first; ``after`` is a cursor (``EventPublic.cursor``) to resume from."""
    events = catalog.list_events(
        organization_id(organization),
        job_id=job_id,
        run_id=run_id,
        topic=topic,
        domain=domain,
        after_cursor=after,
        since=since,
        include_acknowledged=include_acknowledged,
        limit=limit,
        offset=offset,
    )
    return [EventPublic.model_validate(e) for e in events]


def count_events(
    *,
    job_id: str | None = None,
    run_id: str | None = None,
    topic: str | None = None,
    domain: str | None = None,
    after: int | None = None,
    since: datetime | None = None,
    include_acknowledged: bool = True,
    organization: str | None = None,
) -> int:
    """How many events ``list_events`` with the same filters would give, unlimited."""
    return catalog.count_events(
        organization_id(organization),
        job_id=job_id,
        run_id=run_id,
        topic=topic,
        domain=domain,
        after_cursor=after,
        since=since,
        include_acknowledged=include_acknowledged,
    )


def get_event(event_id: str, *, organization: str | None = None) -> EventPublic:
    return EventPublic.model_validate(catalog.get_event(event_id, organization_id(organization)))


def acknowledge_event(
    event_id: str, *, organization: str | None = None, actor: str | None = None
) -> EventPublic:
    """Mark an event as handled; acknowledged events can be left out of ``list_events``."""
    event = catalog.acknowledge_event(event_id, organization_id(organization), actor=actor)
    return EventPublic.model_validate(event)


def subscribe(
    callback: Callable[[EventPublic], Any],
    *,
    job_id: str | None = None,
    run_id: str | None = None,
    topics: list[str] | None = None,
    from_start: bool = False,
    organization: str | None = None,
) -> Subscription:
    """Call ``callback`` for every new event (in order, across processes) until ``.close()``.

    Events come from the catalog, so runs in other processes are seen too.
    """
    return Subscription.start(
        callback,
        organization_id=organization_id(organization),
        job_id=job_id,
        run_id=run_id,
        topics=topics,
        after=None if from_start else catalog.latest_cursor(),
    )


# --------------------------------------------------------------------------- API keys


def create_api_key(
    organization: str | None = None, name: str | None = None
) -> tuple[ApiKeyPublic, str]:
    """A new API key of the organization and its secret, which is returned this once only."""
    key, secret = catalog.create_api_key(organization_id(organization), name)
    return ApiKeyPublic.model_validate(key), secret


def list_api_keys(*, organization: str | None = None) -> list[ApiKeyPublic]:
    """The organization's API keys, revoked ones included (never their secrets)."""
    return [
        ApiKeyPublic.model_validate(k) for k in catalog.list_api_keys(organization_id(organization))
    ]


def revoke_api_key(key_id: str, *, organization: str | None = None) -> ApiKeyPublic:
    """Revoke one of the organization's API keys. It stops authenticating at once in this
    process, and within ``api_key_cache_seconds`` in servers running elsewhere."""
    revoked = catalog.revoke_api_key(key_id, organization_id(organization))
    _authenticated.clear()
    return ApiKeyPublic.model_validate(revoked)


def organization_for_key(secret: str) -> str:
    """The name of the organization an active API key belongs to (``AuthenticationError``
    otherwise)."""
    return catalog.organization_for_key(secret)[0].name


_authenticated: dict[tuple[str, str], tuple[float, tuple[str, str]]] = {}
"""(catalog URL, key hash) -> (valid until, (organization name, key id))."""
_AUTHENTICATED_LIMIT = 10_000


def authenticate(secret: str) -> tuple[str, str]:
    """The organization name and the key id of an active API key (``AuthenticationError``
    otherwise); the key id is the actor of what a request does (a job's ``createdBy``).

    A key found active is remembered for ``api_key_cache_seconds`` (see ``cached_caller``)."""
    cache_key = _cache_key(secret)
    found = _cached(cache_key)
    if found is not None:
        return found
    organization, key_id = catalog.organization_for_key(secret)
    seconds = get_settings().api_key_cache_seconds
    if seconds > 0:
        if len(_authenticated) >= _AUTHENTICATED_LIMIT:
            _authenticated.clear()
        _authenticated[cache_key] = (time.monotonic() + seconds, (organization.name, key_id))
    return organization.name, key_id


def _cache_key(secret: str) -> tuple[str, str]:
    return get_settings().resolved_database_url, catalog.hash_key(secret)


def _cached(cache_key: tuple[str, str]) -> tuple[str, str] | None:
    hit = _authenticated.get(cache_key)
    if hit is None or hit[0] < time.monotonic():
        return None
    return hit[1]


def cached_caller(secret: str) -> tuple[str, str] | None:
    """What ``authenticate`` found for ``secret`` within the last ``api_key_cache_seconds``,
    without touching the database (``None``: ask ``authenticate``)."""
    return _cached(_cache_key(secret))


# --------------------------------------------------------------------------- webhooks


def model_from(cls: type[M], spec: M | dict[str, Any] | None, fields: dict[str, Any]) -> M:
    """``cls`` from a model or a dict plus keyword fields; ``ValidationError`` naming the field."""
    data = spec.model_dump(exclude_unset=True) if isinstance(spec, BaseModel) else dict(spec or {})
    data.update(fields)
    try:
        return cls.model_validate(data)
    except Exception as exc:
        raise _validation_error(exc) from exc


def create_webhook(
    spec: WebhookCreate | dict[str, Any] | None = None,
    *,
    organization: str | None = None,
    **fields: Any,
) -> tuple[WebhookPublic, str]:
    """A webhook (``url``, optional ``topics``, ``secret``) and its signing secret, which is
    returned this once only (generated when none is given)."""
    webhook, secret = catalog.create_webhook(
        organization_id(organization), model_from(WebhookCreate, spec, fields)
    )
    return WebhookPublic.model_validate(webhook), secret


def list_webhooks(*, organization: str | None = None) -> list[WebhookPublic]:
    return [
        WebhookPublic.model_validate(w)
        for w in catalog.list_webhooks(organization_id(organization))
    ]


def get_webhook(webhook_id: str, *, organization: str | None = None) -> WebhookPublic:
    return WebhookPublic.model_validate(
        catalog.get_webhook(webhook_id, organization_id(organization))
    )


def update_webhook(
    webhook_id: str,
    changes: WebhookUpdate | dict[str, Any] | None = None,
    *,
    organization: str | None = None,
    **fields: Any,
) -> WebhookPublic:
    update = model_from(WebhookUpdate, changes, fields)
    if update.url is not None or update.topics is not None:
        current = catalog.get_webhook(webhook_id, organization_id(organization))
        model_from(  # the same checks as on create
            WebhookCreate,
            {"url": update.url or current.url, "topics": update.topics},
            {},
        )
    webhook = catalog.update_webhook(webhook_id, organization_id(organization), update)
    return WebhookPublic.model_validate(webhook)


def delete_webhook(webhook_id: str, *, organization: str | None = None) -> None:
    catalog.delete_webhook(webhook_id, organization_id(organization))


def list_deliveries(
    webhook_id: str,
    *,
    status: DeliveryStatus | str | None = None,
    limit: int = 100,
    offset: int = 0,
    organization: str | None = None,
) -> list[WebhookDeliveryPublic]:
    """A webhook's deliveries, oldest event first (``status``: pending, succeeded, failed)."""
    try:
        wanted = DeliveryStatus(status) if status is not None else None
    except ValueError as exc:
        choices = ", ".join(s.value for s in DeliveryStatus)
        raise ValidationError("status", f"must be one of {choices}") from exc
    deliveries = catalog.list_deliveries(
        webhook_id, organization_id(organization), status=wanted, limit=limit, offset=offset
    )
    return [WebhookDeliveryPublic.model_validate(d) for d in deliveries]


def retry_delivery(
    webhook_id: str, delivery_id: str, *, organization: str | None = None
) -> WebhookDeliveryPublic:
    """Send a delivery again (a replay), whatever became of it."""
    delivery = catalog.retry_delivery(delivery_id, webhook_id, organization_id(organization))
    return WebhookDeliveryPublic.model_validate(delivery)
