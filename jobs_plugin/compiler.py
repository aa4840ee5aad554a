"""Compilation of a job into a Prefect flow whose subflows are its ordered, isolated workflows.

``compile_job`` is deterministic: the same job version gives a flow of the same name, version
(a hash of the configuration), parameters and steps.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from functools import partial
from typing import Any

import anyio.to_thread
from prefect import Flow, State
from prefect.client.schemas.objects import FlowRun

from jobs_plugin import catalog, context, registry
from jobs_plugin.models import Job
from jobs_plugin.planner import PlannedStep, plan_snapshot

_BANNED = re.compile(r"[/%&><]")


def flow_name(name: str) -> str:
    """A Prefect-acceptable flow name (Prefect refuses / % & > <)."""
    return _BANNED.sub("-", name).strip() or "job"


def job_tags(snapshot: dict[str, Any], run_id: str | None = None) -> list[str]:
    tags = ["prefect-jobs", f"job:{snapshot['id']}", f"org:{snapshot['organization_id']}"]
    if run_id:
        tags.append(f"job-run:{run_id}")
    return tags


def config_hash(snapshot: dict[str, Any]) -> str:
    body = json.dumps(snapshot, sort_keys=True, default=str).encode()
    return hashlib.sha256(body).hexdigest()[:12]


def compile_job(
    job: Job | dict[str, Any], *, steps: list[PlannedStep] | None = None
) -> Flow[..., Any]:
    """The job's Prefect flow. Its one parameter is the catalog run id it executes; called
    without one, the flow creates its own run record (so it can also be served or deployed)."""
    from jobs_plugin import runner

    snapshot = catalog.snapshot_of(job) if isinstance(job, Job) else dict(job)
    planned = steps if steps is not None else plan_snapshot(snapshot)

    async def run_job(run_id: str | None = None) -> State[Any]:
        return await runner.run_plan(snapshot, planned, run_id)

    run_job.__doc__ = f"Job {snapshot['name']!r}: " + " → ".join(s.workflow_id for s in planned)
    return Flow(
        fn=run_job,
        name=flow_name(snapshot["name"]),
        version=f"v{snapshot['version']}-{config_hash(snapshot)}",
        description=run_job.__doc__,
        validate_parameters=False,
        persist_result=False,
        on_running=[_observe],
        on_completion=[_observe],
        on_failure=[_observe],
        on_crashed=[_observe],
        on_cancellation=[_observe],
    )


def _observe(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """Flow hook: feed every state of the job's flow run through the translation table."""
    run_id = (flow_run.parameters or {}).get("run_id")
    if run_id:
        catalog.observe_state(
            run_id,
            state.type,
            state.name,
            message=state.message,
            prefect_flow_run_id=str(flow_run.id),
        )


def step_run_name(job_name: str, step: PlannedStep) -> str:
    return f"{job_name}/{step.position + 1:02d}-{step.workflow_id}"


def build_step_flow(step: PlannedStep, ctx: context.RunContext) -> Flow[..., Any]:
    """The subflow of one step: the workflow's own function, given only its parameters and the
    read-only run context. Its result is dropped: nothing is handed to the next step."""
    entrypoint = step.entrypoint
    user_fn = step.flow.fn
    is_async = inspect.iscoroutinefunction(user_fn)

    async def run_workflow(*args: Any, **kwargs: Any) -> None:
        fn = registry.load_flow(entrypoint).fn  # re-imported in a fresh process
        token = context.bind(ctx)
        try:
            if is_async:
                await fn(*args, **kwargs)
            else:
                # A thread keeps the event loop free for the cancel watcher and for timeouts.
                await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), abandon_on_cancel=True)
        finally:
            context.unbind(token)

    run_workflow.__signature__ = inspect.signature(user_fn)  # type: ignore[attr-defined]
    run_workflow.__doc__ = user_fn.__doc__
    return Flow[..., Any](
        fn=run_workflow,
        name=flow_name(step.name),
        version=step.flow.version,
        retries=step.retries,
        retry_delay_seconds=step.retry_delay_seconds,
        timeout_seconds=step.timeout_seconds,
        validate_parameters=False,
        persist_result=False,
    )
