"""Running one step's subflow: in the job's process (``inline``), in a fresh OS process
(``process``), or as a flow run of the workflow's Prefect deployment on whatever worker serves
its pool (``deployment``); all three recorded in Prefect as a subflow of the job's flow run.

The subflow's flow run is created here, named and linked to the job's run through a tracking
task run, the way Prefect links an in-process subflow (and without the extra rename request
Prefect makes for a templated ``flow_run_name``). Both modes watch for a cancel request while
the workflow runs: ``inline`` cancels the subflow's task (an async workflow stops at its next
await; a synchronous one is abandoned in its worker thread), ``process`` terminates the
workflow's process, ``deployment`` asks Prefect to cancel the flow run (its worker kills the
process) and waits for it to end.

A ``deployment`` step's flow run is created by ``run_deployment(..., as_subflow=True)``; it
gets only its parameters, plus the read-only run context in the environment variable
``PREFECT_JOBS_RUN_CONTEXT`` (a process job variable), so it can report progress.
"""

from __future__ import annotations

import multiprocessing.process
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from prefect import Flow, State, Task
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext, TagsContext
from prefect.exceptions import ObjectNotFound
from prefect.flow_engine import run_flow_async, run_flow_in_subprocess
from prefect.states import Cancelled, Cancelling, Crashed, Failed, Pending

from jobs_plugin.context import ENV_VAR
from jobs_plugin.models import Isolation

CancelCheck = Callable[[], bool]


@dataclass
class StepOutcome:
    state: State[Any] | None
    canceled: bool


async def create_subflow_run(
    step_flow: Flow[..., Any],
    parameters: dict[str, Any],
    name: str,
    tags: list[str] | None = None,
) -> FlowRun:
    """A Pending flow run of ``step_flow`` named ``name``, a subflow of the current flow run
    (with the current tags, or ``tags``)."""
    parent = FlowRunContext.get()
    if parent is None:
        raise RuntimeError("a subflow is created inside its parent's flow run")
    tracking: Task[..., Any] = Task(name=step_flow.name, fn=step_flow.fn, version=step_flow.version)
    tracking._is_subflow_tracking_task = True  # type: ignore[attr-defined]
    parent_task_run = await tracking.create_run(flow_run_context=parent, parameters=parameters)
    async with get_client() as client:
        return await client.create_flow_run(
            step_flow,
            name=name,
            parameters=step_flow.serialize_parameters(parameters),
            parent_task_run_id=parent_task_run.id,
            tags=TagsContext.get().current_tags if tags is None else tags,
            state=Pending(),
        )


async def create_deployment_run(
    deployment: str,
    parameters: dict[str, Any],
    name: str,
    context_env: str,
) -> FlowRun:
    """A flow run of ``deployment``, a subflow of the current flow run, left to its workers."""
    from prefect.deployments.flow_runs import arun_deployment

    try:
        return await arun_deployment(
            deployment,
            parameters=parameters,
            timeout=0,
            as_subflow=True,
            flow_run_name=name,
            tags=TagsContext.get().current_tags,
            job_variables={"env": {ENV_VAR: context_env}},
        )
    except ObjectNotFound:
        raise StepError(
            f"there is no Prefect deployment {deployment!r} (create it with "
            "`prefect-jobs workflows deploy`, or name the workflow's deployment)"
        ) from None


class StepError(Exception):
    """A step that could not be started; the message says why."""


async def run_step(
    isolation: Isolation,
    step_flow: Flow[..., Any],
    flow_run: FlowRun,
    parameters: dict[str, Any],
    *,
    cancel_requested: CancelCheck,
    poll_seconds: float,
    timeout_seconds: float | None = None,
) -> StepOutcome:
    if isolation is Isolation.DEPLOYMENT:
        return await _run_on_deployment(flow_run, cancel_requested, poll_seconds, timeout_seconds)
    if isolation is Isolation.PROCESS:
        return await _run_in_process(
            step_flow, flow_run, parameters, cancel_requested, poll_seconds
        )
    return await _run_inline(step_flow, flow_run, parameters, cancel_requested, poll_seconds)


async def _run_on_deployment(
    flow_run: FlowRun,
    cancel_requested: CancelCheck,
    poll_seconds: float,
    timeout_seconds: float | None,
) -> StepOutcome:
    """Follow the deployment's flow run to its end; cancel it on request or after
    ``timeout_seconds`` (then it ends FAILED, TimedOut)."""
    deadline = None if timeout_seconds is None else anyio.current_time() + timeout_seconds
    canceled = timed_out = False
    async with get_client() as client:
        while True:
            state = (await client.read_flow_run(flow_run.id)).state
            if state is not None and state.is_final():
                break
            if not (canceled or timed_out):
                timed_out = deadline is not None and anyio.current_time() > deadline
                canceled = not timed_out and cancel_requested()
                if canceled or timed_out:
                    await client.set_flow_run_state(
                        flow_run.id, Cancelling(message="canceled by its job"), force=True
                    )
                    stop_by = anyio.current_time() + _CANCEL_GRACE_SECONDS
            elif anyio.current_time() > stop_by:  # nobody acted on Cancelling: say it ended
                state = await _force(flow_run, Cancelled(message="canceled by its job"))
                break
            await anyio.sleep(poll_seconds)
    if timed_out:
        message = f"timed out after {timeout_seconds} s on its deployment"
        return StepOutcome(
            state=await _force(flow_run, Failed(name="TimedOut", message=message)), canceled=False
        )
    return StepOutcome(state=state, canceled=canceled)


_CANCEL_GRACE_SECONDS = 30.0
"""How long a canceled deployment run may take to reach Cancelled (its worker kills it)."""


async def _run_inline(
    step_flow: Flow[..., Any],
    flow_run: FlowRun,
    parameters: dict[str, Any],
    cancel_requested: CancelCheck,
    poll_seconds: float,
) -> StepOutcome:
    outcome = StepOutcome(state=None, canceled=False)

    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while True:
                await anyio.sleep(poll_seconds)
                if cancel_requested():
                    outcome.canceled = True
                    group.cancel_scope.cancel()
                    return

        group.start_soon(watch)
        state = await run_flow_async(
            step_flow, flow_run=flow_run, parameters=parameters, return_type="state"
        )
        outcome.state = state if isinstance(state, State) else None
        group.cancel_scope.cancel()
    if outcome.canceled:
        outcome.state = await _force(flow_run, Cancelled(message="canceled while running"))
    return outcome


async def _run_in_process(
    step_flow: Flow[..., Any],
    flow_run: FlowRun,
    parameters: dict[str, Any],
    cancel_requested: CancelCheck,
    poll_seconds: float,
) -> StepOutcome:
    async with get_client() as client:
        process = run_flow_in_subprocess(
            step_flow,
            flow_run=flow_run,
            parameters=parameters,
            context={"tags_context": TagsContext.get().serialize()},
            env={"PREFECT_API_URL": str(client.api_url).rstrip("/")},
        )
        try:
            canceled = await _wait(process, cancel_requested, poll_seconds)
        except BaseException:  # the job's process is being stopped (Prefect's cancel): no orphan
            process.kill()  # at once: the worker gives this process only a few seconds
            raise
        state = (await client.read_flow_run(flow_run.id)).state
    if canceled and not (state and state.is_final() and not state.is_crashed()):
        state = await _force(flow_run, Cancelled(message="canceled: its process was terminated"))
    elif state is None or not state.is_final():
        message = f"the workflow's process exited with code {process.exitcode}"
        state = await _force(flow_run, Crashed(message=message))
    return StepOutcome(state=state, canceled=canceled)


async def _force(flow_run: FlowRun, state: State[Any]) -> State[Any]:
    """Record a final state we decided for a subflow (Prefect saw it interrupted or killed)."""
    async with get_client() as client:
        await client.set_flow_run_state(flow_run.id, state, force=True)
    return state


async def _wait(
    process: multiprocessing.process.BaseProcess,
    cancel_requested: CancelCheck,
    poll_seconds: float,
) -> bool:
    """Wait for the process to end; terminate it if a cancel is requested. True if canceled."""
    while process.is_alive():
        await anyio.to_thread.run_sync(process.join, poll_seconds)
        if process.is_alive() and cancel_requested():
            await anyio.to_thread.run_sync(_stop, process)
            return True
    return False


def _stop(process: multiprocessing.process.BaseProcess) -> None:
    """Terminate the process; kill it if it is still there 5 s later."""
    if not process.is_alive():
        return
    process.terminate()
    process.join(5)
    if process.is_alive():
        process.kill()
        process.join()
