"""The body of a compiled job flow: runs the planned workflows in order, one at a time.

Each step is a subflow that receives only its own parameters; nothing it returns or sets is
handed on. In the job's own process, environment variables and the working directory are put
back after every inline step; a ``process`` step starts from that clean state in a fresh
interpreter. The first failure halts the run (later steps are NOT_RUN), a cancel request
stops it before the next step or interrupts the running one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio.to_thread
from prefect import State, tags
from prefect.client.schemas.objects import StateType
from prefect.context import FlowRunContext
from prefect.states import Cancelled, Completed, Crashed, Failed

from jobs_plugin import artifacts, catalog, compiler, context, isolation
from jobs_plugin.models import Isolation, JobRun
from jobs_plugin.planner import PlannedStep
from jobs_plugin.settings import get_settings
from jobs_plugin.translation import WorkflowRunStatus, workflow_status_for_state

logger = logging.getLogger("prefect_jobs.runner")


def plan_rows(steps: list[PlannedStep]) -> list[dict[str, Any]]:
    return [
        {
            "position": s.position,
            "workflow_id": s.workflow_id,
            "name": s.name,
            "isolation": s.isolation,
        }
        for s in steps
    ]


async def run_plan(
    snapshot: dict[str, Any], steps: list[PlannedStep], run_id: str | None
) -> State[Any]:
    if run_id is None:  # the compiled flow was called directly: record the run ourselves
        flow_run_ctx = FlowRunContext.get()
        flow_run = flow_run_ctx.flow_run if flow_run_ctx else None
        run = catalog.create_run(
            snapshot["id"], snapshot["organization_id"], version=snapshot["version"]
        )
        catalog.set_plan(run.id, plan_rows(steps))
        run = catalog.observe_state(
            run.id,
            StateType.RUNNING,
            "Running",
            prefect_flow_run_id=str(flow_run.id) if flow_run else None,
        )
    else:  # the flow's on_running hook has recorded EXECUTING already
        run = catalog.get_run(run_id)
    writes = SerialWrites()
    beating = asyncio.ensure_future(_heartbeat(run.id, get_settings().heartbeat_seconds))
    shown = artifacts.RunArtifacts(snapshot["name"], run, steps)
    final: State[Any] = Crashed(message="the job's flow ended unexpectedly")
    try:
        with tags(*compiler.job_tags(snapshot, run.id)):
            final = await _run_steps(snapshot, steps, run, writes, shown)
            return final
    finally:
        beating.cancel()
        await writes.drain()
        try:
            await shown.finish(catalog.get_run(run.id), final)
        except Exception as exc:  # the run's own result stands
            logger.warning("could not show the outcome of run %s: %s", run.id, exc)


async def _heartbeat(run_id: str, every: float) -> None:
    """Record that this process is alive and running the run, until canceled (see
    ``jobs_plugin.reconciler``)."""
    while True:
        try:
            await anyio.to_thread.run_sync(catalog.beat, run_id)
        except Exception as exc:  # a busy catalog: the next beat may get through
            logger.warning("could not record the heartbeat of run %s: %s", run_id, exc)
        await asyncio.sleep(every)


class SerialWrites:
    """Catalog writes done in order on a worker thread, off the event loop, so they overlap
    with the Prefect API calls of the next step instead of adding to them. ``drain`` waits for
    all of them (and raises the first error) before the run's final state is reported."""

    def __init__(self) -> None:
        self._last: asyncio.Future[Any] | None = None

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        previous = self._last

        async def write() -> Any:
            if previous is not None:
                await previous
            return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))

        self._last = asyncio.ensure_future(write())

    async def drain(self) -> None:
        if self._last is not None:
            await self._last


async def _run_steps(
    snapshot: dict[str, Any],
    steps: list[PlannedStep],
    run: JobRun,
    writes: SerialWrites,
    shown: artifacts.RunArtifacts,
) -> State[Any]:
    settings = get_settings()
    records = {r.position: r for r in catalog.list_workflow_runs(run.id)}
    env, cwd = dict(os.environ), os.getcwd()
    total = len(steps)
    lineage = catalog.lineage_id(run.id) if run.retry_of else run.id

    def cancel_requested() -> bool:
        return catalog.is_cancel_requested(run.id)

    for step in steps:
        record = records[step.position]
        if record.status is WorkflowRunStatus.COMPLETED:
            continue  # carried over from an earlier attempt
        if cancel_requested():
            writes.submit(catalog.mark_not_run, run.id, step.position)
            return Cancelled(message=f"canceled before step {step.position + 1} of {total}")
        ctx = context.RunContext(
            job_id=snapshot["id"],
            job_name=snapshot["name"],
            run_id=run.id,
            organization_id=run.organization_id,
            attempt=run.attempt,
            workflow_id=step.workflow_id,
            workflow_run_id=record.id,
            position=step.position,
            lineage_id=lineage,
        )
        step_flow = compiler.build_step_flow(step, ctx)
        where = f"workflow {step.workflow_id!r} (step {step.position + 1} of {total})"
        try:
            with tags(f"workflow:{step.workflow_id}"):
                try:
                    flow_run = await _create_step_run(snapshot, step, step_flow, ctx)
                except isolation.StepError as exc:
                    writes.submit(
                        catalog.finish_workflow_run,
                        record.id,
                        WorkflowRunStatus.FAILED,
                        error=str(exc),
                    )
                    writes.submit(catalog.mark_not_run, run.id, step.position + 1)
                    return Failed(message=f"{where} failed: {exc}")
                writes.submit(
                    catalog.start_workflow_run, record.id, prefect_flow_run_id=str(flow_run.id)
                )
                if shown.due():
                    latest = await anyio.to_thread.run_sync(catalog.get_run, run.id)
                    shown.update(latest, current=step.workflow_id)
                outcome = await isolation.run_step(
                    step.isolation,
                    step_flow,
                    flow_run,
                    step.parameters,
                    cancel_requested=cancel_requested,
                    poll_seconds=settings.cancel_poll_seconds,
                    timeout_seconds=step.timeout_seconds,
                )
        finally:
            _restore(env, cwd)
        state = outcome.state
        if outcome.canceled:
            status = WorkflowRunStatus.CANCELED
        elif state is None:
            status = WorkflowRunStatus.FAILED
        else:
            status = workflow_status_for_state(state.type, state.name)
        message = (state.message if state is not None else None) or status.value.lower()
        writes.submit(
            catalog.finish_workflow_run,
            record.id,
            status,
            error=None if status is WorkflowRunStatus.COMPLETED else message,
        )
        if status is not WorkflowRunStatus.COMPLETED:
            writes.submit(catalog.mark_not_run, run.id, step.position + 1)
            if outcome.canceled:
                return Cancelled(message=f"canceled during {where}")
            if status is WorkflowRunStatus.CANCELED:
                return Cancelled(message=f"{where} was canceled: {message}")
            return Failed(message=f"{where} failed: {message}")
    return Completed(message=f"{total} of {total} workflows completed")


async def _create_step_run(
    snapshot: dict[str, Any],
    step: PlannedStep,
    step_flow: Any,
    ctx: context.RunContext,
) -> Any:
    """The step's Prefect flow run, a subflow of the job's: of the workflow's deployment, or of
    ``step_flow`` (run here or in a fresh process)."""
    name = compiler.step_run_name(snapshot["name"], step)
    if step.isolation is Isolation.DEPLOYMENT and step.deployment:
        parameters = step.flow.serialize_parameters(step.parameters)
        return await isolation.create_deployment_run(
            step.deployment, parameters, name, context.to_env(ctx)
        )
    return await isolation.create_subflow_run(step_flow, step.parameters, name)


def _restore(env: dict[str, str], cwd: str) -> None:
    """Put back what an inline workflow may have changed in the job's process."""
    if dict(os.environ) != env:
        os.environ.clear()
        os.environ.update(env)
    if os.getcwd() != cwd:
        os.chdir(cwd)
