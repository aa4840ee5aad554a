"""The body of a compiled job flow: runs the planned workflows in order, one at a time.

Each step is a subflow that receives only its own parameters; nothing it returns or sets is
handed on. In the job's own process, environment variables and the working directory are put
back after every inline step; a ``process`` step starts from that clean state in a fresh
interpreter. The first failure halts the run (later steps are NOT_RUN), a cancel request
stops it before the next step or interrupts the running one.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import State, tags
from prefect.client.schemas.objects import StateType
from prefect.context import FlowRunContext
from prefect.states import Cancelled, Completed, Failed

from jobs_plugin import catalog, compiler, context, isolation
from jobs_plugin.models import Isolation, JobRun
from jobs_plugin.planner import PlannedStep
from jobs_plugin.settings import get_settings
from jobs_plugin.translation import WorkflowRunStatus, workflow_status_for_state


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
    flow_run_ctx = FlowRunContext.get()
    prefect_id = str(flow_run_ctx.flow_run.id) if flow_run_ctx and flow_run_ctx.flow_run else None
    if run_id is None:  # the compiled flow was called directly: record the run ourselves
        run = catalog.create_run(
            snapshot["id"], snapshot["organization_id"], version=snapshot["version"]
        )
        catalog.set_plan(run.id, plan_rows(steps))
        run_id = run.id
    run = catalog.observe_state(
        run_id, StateType.RUNNING, "Running", prefect_flow_run_id=prefect_id
    )
    with tags(*compiler.job_tags(snapshot, run_id)):
        return await _run_steps(snapshot, steps, run)


async def _run_steps(snapshot: dict[str, Any], steps: list[PlannedStep], run: JobRun) -> State[Any]:
    settings = get_settings()
    records = {r.position: r for r in catalog.list_workflow_runs(run.id)}
    env, cwd = dict(os.environ), os.getcwd()
    total = len(steps)

    def cancel_requested() -> bool:
        return catalog.is_cancel_requested(run.id)

    for step in steps:
        record = records[step.position]
        if record.status is WorkflowRunStatus.COMPLETED:
            continue  # carried over from an earlier attempt
        if cancel_requested():
            catalog.mark_not_run(run.id, step.position)
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
        )
        step_flow = compiler.build_step_flow(step, snapshot["name"], ctx)
        where = f"workflow {step.workflow_id!r} (step {step.position + 1} of {total})"
        try:
            with tags(f"workflow:{step.workflow_id}"):
                outcome = await isolation.run_step(
                    step.isolation,
                    step_flow,
                    step.parameters,
                    cancel_requested=cancel_requested,
                    poll_seconds=settings.cancel_poll_seconds,
                )
        finally:
            _restore(env, cwd)
        if outcome.canceled:
            catalog.finish_workflow_run(
                record.id,
                WorkflowRunStatus.CANCELED,
                error="canceled",
                prefect_flow_run_id=outcome.prefect_flow_run_id,
            )
            interrupted = catalog.get_workflow_run(record.id).prefect_flow_run_id
            if interrupted and step.isolation is Isolation.INLINE:
                await isolation.mark_cancelled(interrupted, f"canceled during {where}")
            catalog.mark_not_run(run.id, step.position + 1)
            return Cancelled(message=f"canceled during {where}")
        state = outcome.state
        status = (
            workflow_status_for_state(state.type, state.name)
            if state is not None
            else WorkflowRunStatus.FAILED
        )
        message = (state.message if state is not None else None) or status.value.lower()
        catalog.finish_workflow_run(
            record.id,
            status,
            error=None if status is WorkflowRunStatus.COMPLETED else message,
            prefect_flow_run_id=outcome.prefect_flow_run_id,
        )
        if status is not WorkflowRunStatus.COMPLETED:
            catalog.mark_not_run(run.id, step.position + 1)
            if status is WorkflowRunStatus.CANCELED:
                return Cancelled(message=f"{where} was canceled: {message}")
            return Failed(message=f"{where} failed: {message}")
    return Completed(message=f"{total} of {total} workflows completed")


def _restore(env: dict[str, str], cwd: str) -> None:
    """Put back what an inline workflow may have changed in the job's process."""
    if dict(os.environ) != env:
        os.environ.clear()
        os.environ.update(env)
    if os.getcwd() != cwd:
        os.chdir(cwd)
