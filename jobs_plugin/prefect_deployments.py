"""Prefect deployments of prefect-jobs: the shared ``job-runner`` one, which every non-blocking
execute goes through, one per job that has schedules (``job-<job id>``), and one per
``deployment``-isolated workflow (``deploy_workflow``).

A job's deployment runs where and how the job-runner deployment runs: it copies its work pool,
queue, entrypoint, pull steps and job variables, so the same workers take its runs. It carries
the job's schedules (cron or interval, timezone, active; each schedule's slug is its catalog
id, so the Prefect UI and the catalog name the same schedule) and the job's overlap rule as
the deployment's concurrency limit: at most ``maxConcurrentRuns`` flow runs at once; one more is
cancelled by Prefect (``overlap: skip``, strategy ``CANCEL_NEW``) or waits for a slot
(``overlap: queue``, ``ENQUEUE``).

The catalog is the source of truth and this module only pushes it: ``apply_job`` makes one
job's deployment match its schedules (and deletes it when there are none), ``sync_all`` does it
for every job (after ``prefect deploy`` moved the job runner, or on a new Prefect database).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.exceptions import ObjectNotFound

from jobs_plugin.dispatch import (
    JOB_RUNNER_DEPLOYMENT,
    JOB_RUNNER_FLOW,
    JOB_RUNNER_NAME,
    job_deployment,
    job_deployment_name,
)
from jobs_plugin.errors import ExecutionError, ValidationError
from jobs_plugin.models import Job, JobSchedule, Overlap, Workflow

logger = logging.getLogger("prefect_jobs.deployments")
_STRATEGIES = {
    Overlap.SKIP: ConcurrencyLimitStrategy.CANCEL_NEW,
    Overlap.QUEUE: ConcurrencyLimitStrategy.ENQUEUE,
}


def _is_job_deployment(name: str) -> bool:
    return name.startswith("job-") and name != JOB_RUNNER_NAME


def _require_server() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ExecutionError(
            "schedules need a Prefect server: set PREFECT_API_URL (`prefect-jobs up` prints it)"
        )
    return str(url)


async def _job_runner(client: PrefectClient) -> DeploymentResponse:
    try:
        runner = await client.read_deployment_by_name(JOB_RUNNER_DEPLOYMENT)
    except ObjectNotFound:
        raise ExecutionError(
            f"the Prefect server at {client.api_url} has no {JOB_RUNNER_DEPLOYMENT!r} "
            "deployment: start `prefect-jobs up`, or `prefect deploy` the repository's "
            "prefect.yaml"
        ) from None
    if not runner.work_pool_name:
        raise ExecutionError(
            f"{JOB_RUNNER_DEPLOYMENT!r} is served by a runner (deployments/serve.py), not on a "
            "work pool: a job's schedules need a work pool and its workers (`prefect-jobs up`, "
            "or prefect.yaml)"
        )
    return runner


def _schedule(row: JobSchedule) -> DeploymentScheduleCreate:
    spec: CronSchedule | IntervalSchedule
    if row.cron is not None:
        spec = CronSchedule(cron=row.cron, timezone=row.timezone)
    else:
        spec = IntervalSchedule(
            interval=timedelta(seconds=row.interval_seconds or 0), timezone=row.timezone
        )
    return DeploymentScheduleCreate(schedule=spec, active=row.active, slug=row.id)


async def apply_job(job: Job, schedules: Sequence[JobSchedule], organization: str) -> str | None:
    """Make job's deployment match ``schedules``: create or update it, or delete it when there
    are none. Returns its full name (``None`` without schedules); ``ExecutionError`` when
    Prefect cannot take it (no server, no job-runner deployment on a pool, unreachable)."""
    if not schedules:
        await remove_job(job.id)
        return None
    _require_server()
    try:
        async with get_client() as client:
            runner = await _job_runner(client)
            await client.create_deployment(  # an upsert by (flow, name)
                flow_id=runner.flow_id,
                name=job_deployment_name(job.id),
                description=f"prefect-jobs job {job.name!r} ({job.id}), on its schedules.",
                parameters={"job_id": job.id, "organization": organization},
                schedules=[_schedule(row) for row in schedules],
                concurrency_limit=job.max_concurrent_runs,
                concurrency_options=ConcurrencyOptions(collision_strategy=_STRATEGIES[job.overlap])
                if job.max_concurrent_runs is not None
                else None,
                tags=["prefect-jobs", f"job:{job.id}", f"org:{job.organization_id}"],
                work_pool_name=runner.work_pool_name,
                work_queue_name=runner.work_queue_name,
                entrypoint=runner.entrypoint,
                path=runner.path,
                pull_steps=runner.pull_steps,
                job_variables=dict(runner.job_variables or {}),
                storage_document_id=runner.storage_document_id,
                parameter_openapi_schema=runner.parameter_openapi_schema,
                enforce_parameter_schema=False,
            )
    except ExecutionError:
        raise
    except Exception as exc:
        message = f"could not apply the schedules of job {job.id} to Prefect: {exc}"
        raise ExecutionError(message) from exc
    return job_deployment(job.id)


async def remove_job(job_id: str) -> bool:
    """Delete the job's deployment (and with it its scheduled runs); whether there was one."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return False
    async with get_client() as client:
        try:
            deployment = await client.read_deployment_by_name(job_deployment(job_id))
        except ObjectNotFound:
            return False
        await client.delete_deployment(deployment.id)
    return True


async def read_job_deployment(job_id: str) -> DeploymentResponse | None:
    async with get_client() as client:
        try:
            return await client.read_deployment_by_name(job_deployment(job_id))
        except ObjectNotFound:
            return None


async def sync_all(jobs: Sequence[tuple[Job, Sequence[JobSchedule], str]]) -> list[str]:
    """Push every job's schedules (``(job, schedules, organization name)``), and delete the
    job deployments of jobs that are gone or have none. Returns the deployments kept."""
    _require_server()
    kept: list[str] = []
    for job, schedules, organization in jobs:
        name = await apply_job(job, schedules, organization)
        if name:
            kept.append(name)
    wanted = {name.split("/", 1)[1] for name in kept}
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async with get_client() as client:
        ours = await client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[JOB_RUNNER_FLOW]))
        )
        for deployment in ours:
            if _is_job_deployment(deployment.name) and deployment.name not in wanted:
                logger.info("deleting %s: its job has no schedules", deployment.name)
                await client.delete_deployment(deployment.id)
    return kept


async def deploy_workflow(workflow: Workflow, flow: Flow[..., Any], pool: str) -> str:
    """Create (or update) the deployment a ``deployment``-isolated workflow runs as, on the
    process work pool ``pool``; its full name. The deployment's entrypoint is the workflow's,
    so workers load it the way the catalog does (installed module or absolute path)."""
    from jobs_plugin.planner import default_deployment
    from jobs_plugin.registry import schema_of

    full = workflow.deployment or default_deployment(flow, workflow.id)
    flow_name, name = full.split("/", 1)
    if flow_name != flow.name:
        raise ValidationError(
            "deployment", f"{full!r} is not a deployment of the workflow's flow {flow.name!r}"
        )
    _require_server()
    async with get_client() as client:
        try:
            await client.read_work_pool(pool)
        except ObjectNotFound:
            raise ExecutionError(
                f"there is no work pool {pool!r} (`prefect-jobs up` creates {pool!r}, or "
                f"`prefect work-pool create {pool} --type process`)"
            ) from None
        flow_id = await client.create_flow_from_name(flow.name)
        await client.create_deployment(
            flow_id=flow_id,
            name=name,
            description=f"prefect-jobs workflow {workflow.id!r}: {workflow.description or ''}",
            work_pool_name=pool,
            entrypoint=workflow.entrypoint,
            parameter_openapi_schema=workflow.parameter_schema or schema_of(flow),
            tags=["prefect-jobs", f"workflow:{workflow.id}"],
            enforce_parameter_schema=False,
        )
    return full


async def register_job_runner(pool: str, **extra: Any) -> UUID:
    """Create the process work pool ``pool`` if missing and put the job-runner deployment on it
    (its module-path entrypoint loads from the installed package, whatever the folder)."""
    from prefect.types.entrypoint import EntrypointType
    from prefect.workers.process import ProcessWorker

    from flows.job_runner import run_job

    async with get_client() as client:
        try:
            await client.read_work_pool(pool)
        except ObjectNotFound:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=pool,
                    type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="prefect-jobs: job runs and deployment-isolated workflows.",
                )
            )
    deployment = await run_job.ato_deployment(
        name=JOB_RUNNER_NAME,
        entrypoint_type=EntrypointType.MODULE_PATH,
        work_pool_name=pool,
        tags=["prefect-jobs"],
        description="Runs one prefect-jobs job (parameter job_id) from the catalog.",
        **extra,
    )
    return await deployment.aapply(work_pool_name=pool)
