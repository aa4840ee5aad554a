"""Running one step's subflow: in the job's process (``inline``) or in a fresh OS process
(``process``), both recorded in Prefect as a subflow of the job's flow run.

The subflow's flow run is created here, named and linked to the job's run through a tracking
task run, the way Prefect links an in-process subflow (and without the extra rename request
Prefect makes for a templated ``flow_run_name``). Both modes watch for a cancel request while
the workflow runs: ``inline`` cancels the subflow's task (an async workflow stops at its next
await; a synchronous one is abandoned in its worker thread), ``process`` terminates the
workflow's process.
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
from prefect.flow_engine import run_flow_async, run_flow_in_subprocess
from prefect.states import Cancelled, Crashed, Pending

from jobs_plugin.models import Isolation

CancelCheck = Callable[[], bool]


@dataclass
class StepOutcome:
    state: State[Any] | None
    canceled: bool


async def create_subflow_run(
    step_flow: Flow[..., Any], parameters: dict[str, Any], name: str
) -> FlowRun:
    """A Pending flow run of ``step_flow`` named ``name``, a subflow of the current flow run."""
    parent = FlowRunContext.get()
    if parent is None:
        raise RuntimeError("a workflow step runs inside its job's flow run")
    tracking: Task[..., Any] = Task(name=step_flow.name, fn=step_flow.fn, version=step_flow.version)
    tracking._is_subflow_tracking_task = True  # type: ignore[attr-defined]
    parent_task_run = await tracking.create_run(flow_run_context=parent, parameters=parameters)
    async with get_client() as client:
        return await client.create_flow_run(
            step_flow,
            name=name,
            parameters=step_flow.serialize_parameters(parameters),
            parent_task_run_id=parent_task_run.id,
            tags=TagsContext.get().current_tags,
            state=Pending(),
        )


async def run_step(
    isolation: Isolation,
    step_flow: Flow[..., Any],
    flow_run: FlowRun,
    parameters: dict[str, Any],
    *,
    cancel_requested: CancelCheck,
    poll_seconds: float,
) -> StepOutcome:
    if isolation is Isolation.PROCESS:
        return await _run_in_process(
            step_flow, flow_run, parameters, cancel_requested, poll_seconds
        )
    return await _run_inline(step_flow, flow_run, parameters, cancel_requested, poll_seconds)


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
        canceled = await _wait(process, cancel_requested, poll_seconds)
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
            process.terminate()
            await anyio.to_thread.run_sync(process.join, 5)
            if process.is_alive():
                process.kill()
                await anyio.to_thread.run_sync(process.join)
            return True
    return False
