"""Running one step's subflow: in the job's process (``inline``) or in a fresh OS process
(``process``), both recorded in Prefect as a subflow of the job's flow run.

Both watch for a cancel request while the workflow runs: ``inline`` cancels the subflow's
task (an async workflow stops at its next await; a synchronous one is abandoned in its worker
thread), ``process`` terminates the workflow's process.
"""

from __future__ import annotations

import multiprocessing.process
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import anyio
import anyio.to_thread
from prefect import Flow, State, Task
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext, TagsContext
from prefect.flow_engine import run_flow_in_subprocess
from prefect.states import Cancelled, Crashed

from jobs_plugin.models import Isolation


@dataclass
class StepOutcome:
    state: State[Any] | None
    canceled: bool
    prefect_flow_run_id: str | None = None


CancelCheck = Callable[[], bool]


async def run_step(
    isolation: Isolation,
    step_flow: Flow[..., Any],
    parameters: dict[str, Any],
    *,
    cancel_requested: CancelCheck,
    poll_seconds: float,
) -> StepOutcome:
    if isolation is Isolation.PROCESS:
        return await _run_in_process(step_flow, parameters, cancel_requested, poll_seconds)
    return await _run_inline(step_flow, parameters, cancel_requested, poll_seconds)


async def _run_inline(
    step_flow: Flow[..., Any],
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
        call = step_flow(**parameters, return_state=True)
        outcome.state = await cast(Awaitable[State[Any]], call)
        group.cancel_scope.cancel()
    return outcome


async def _run_in_process(
    step_flow: Flow[..., Any],
    parameters: dict[str, Any],
    cancel_requested: CancelCheck,
    poll_seconds: float,
) -> StepOutcome:
    parent = FlowRunContext.get()
    if parent is None:
        raise RuntimeError("process isolation needs a parent flow run")
    # Link the new flow run to the job's run the way Prefect links an in-process subflow.
    tracking: Task[..., Any] = Task(name=step_flow.name, fn=step_flow.fn, version=step_flow.version)
    tracking._is_subflow_tracking_task = True  # type: ignore[attr-defined]
    parent_task_run = await tracking.create_run(flow_run_context=parent, parameters=parameters)
    async with get_client() as client:
        flow_run = await client.create_flow_run(
            step_flow,
            name=step_flow.flow_run_name if isinstance(step_flow.flow_run_name, str) else None,
            parameters=step_flow.serialize_parameters(parameters),
            parent_task_run_id=parent_task_run.id,
            tags=TagsContext.get().current_tags,
        )
        process = run_flow_in_subprocess(
            step_flow,
            flow_run=flow_run,
            parameters=parameters,
            context={"tags_context": TagsContext.get().serialize()},
            env={"PREFECT_API_URL": str(client.api_url).rstrip("/")},
        )
        canceled = await _wait(process, cancel_requested, poll_seconds)
        final = await client.read_flow_run(flow_run.id)
        state = final.state
        if canceled and not (state and state.is_final() and not state.is_crashed()):
            state = Cancelled(message="canceled: the workflow's process was terminated")
            await client.set_flow_run_state(flow_run.id, state, force=True)
        elif state is None or not state.is_final():
            state = Crashed(message=f"the workflow's process exited with code {process.exitcode}")
            await client.set_flow_run_state(flow_run.id, state, force=True)
    return StepOutcome(state=state, canceled=canceled, prefect_flow_run_id=str(flow_run.id))


async def mark_cancelled(flow_run_id: str, message: str) -> None:
    """Record in Prefect that a subflow we interrupted was canceled (not crashed)."""
    async with get_client() as client:
        await client.set_flow_run_state(flow_run_id, Cancelled(message=message), force=True)


async def _wait(
    process: multiprocessing.process.BaseProcess,
    cancel_requested: CancelCheck,
    poll_seconds: float,
) -> bool:
    """Wait for the process to end; terminate it if a cancel is requested. True if canceled."""
    while process.is_alive():
        await anyio.to_thread.run_sync(process.join, poll_seconds)
        if process.is_alive() and cancel_requested():
            process.terminate()
            await anyio.to_thread.run_sync(process.join, 5)
            if process.is_alive():
                process.kill()
                await anyio.to_thread.run_sync(process.join)
            return True
    return False
