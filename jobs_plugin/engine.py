"""Starting, cancelling and retrying job runs.

A run goes PLANNING (record created, plan resolved and validated) → READY (a Prefect flow run
exists, Pending) → EXECUTING (the flow runs) → COMPLETED | FAILED | CANCELED. Execution happens
in the caller's process against whatever Prefect API is configured (``PREFECT_API_URL``, or
Prefect's temporary local server when none is). Async flows throughout: no 1-second wait per
synchronous flow run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.context import AsyncClientContext, FlowRunContext
from prefect.flow_engine import run_flow_async
from prefect.states import Pending

from jobs_plugin import catalog, compiler, dispatch, isolation, planner, runner
from jobs_plugin.errors import ExecutionError, ValidationError
from jobs_plugin.models import JobRun
from jobs_plugin.translation import JobStatus

logger = logging.getLogger("prefect_jobs.engine")
_background: set[threading.Thread] = set()


async def execute(
    job_id: str,
    organization_id: str,
    *,
    version: int | None = None,
    wait: bool = True,
    actor: str | None = None,
) -> JobRun:
    """Run a job (its current version, or ``version``). With ``wait=False`` the run is returned
    at once, in PLANNING, and goes on in a background thread of this process."""
    run = catalog.create_run(job_id, organization_id, version=version, actor=actor)
    return await launch(run, wait=wait)


async def retry(
    run_id: str, organization_id: str, *, wait: bool = True, actor: str | None = None
) -> JobRun:
    """A new attempt of a FAILED or CANCELED run, starting at its first unfinished workflow."""
    run = catalog.create_retry_run(run_id, organization_id, actor=actor)
    return await launch(run, wait=wait)


def cancel(run_id: str, organization_id: str | None = None, *, info: str | None = None) -> JobRun:
    """Ask a run to stop: before its next workflow, or now for the running one where possible.

    A run that has not reached EXECUTING is ended CANCELED at once by whoever runs it next.
    """
    run = catalog.request_cancel(run_id, organization_id, info=info)
    if not run.snapshot.get("managed", True):  # nobody of ours runs it: it ends here
        return catalog.observe_state(run.id, StateType.CANCELLED, "Cancelled")
    if dispatch.cancel_waiting(run):  # no runner has started it: nobody else will end it
        return catalog.observe_state(
            run.id, StateType.CANCELLED, "Cancelled", message="canceled before it started"
        )
    return run


async def launch_existing(run_id: str) -> JobRun:
    """Run a run that was dispatched to the job-runner deployment, here (the runner's side);
    a run that has started or ended already is left as it is (a flow run delivered twice)."""
    run = catalog.get_run(run_id)
    if run.status not in (JobStatus.PLANNING, JobStatus.READY):
        return run
    # Alive from now on: it may have waited longer than crash_after_seconds for this runner,
    # and its flow's own heartbeats start only once that flow runs.
    catalog.beat(run.id)
    return await _launch(run)


async def launch(run: JobRun, *, wait: bool) -> JobRun:
    """Plan, create the Prefect flow run and run it; in a background thread unless ``wait``.

    A run of a job its caller runs (``managed: false``) only enters READY (``job:waiting``):
    the caller reports it (``ack``, ``complete``, ``fail``). Without ``wait``, the run goes to
    the job-runner deployment when there is one (see ``jobs_plugin.dispatch``)."""
    if not run.snapshot.get("managed", True):
        return catalog.observe_state(run.id, StateType.PENDING, "Pending")
    if not wait and await dispatch.via_deployment():
        return await dispatch.dispatch(run)
    if not wait:
        thread = threading.Thread(
            target=_launch_in_thread, args=(run,), name=f"prefect-jobs-{run.id}"
        )
        _background.add(thread)
        thread.start()
        return run
    try:
        return await _launch(run)
    finally:
        _background.discard(threading.current_thread())


def _launch_in_thread(run: JobRun) -> None:
    """Thread target: the run records its own failure; here it is only logged."""
    try:
        asyncio.run(launch(run, wait=True))
    except Exception as exc:
        logger.error("job run %s could not be executed: %s", run.id, exc)


async def _launch(run: JobRun) -> JobRun:
    try:
        steps = planner.plan_snapshot(run.snapshot)
    except ValidationError as exc:
        return catalog.observe_state(
            run.id, StateType.FAILED, "Failed", message=f"planning failed: {exc}"
        )
    catalog.set_plan(run.id, runner.plan_rows(steps))
    flow = compiler.compile_job(run.snapshot, steps=steps)
    name = f"{compiler.flow_name(run.snapshot['name'])}/{run.id}"
    tags = compiler.job_tags(run.snapshot, run.id)
    async with contextlib.AsyncExitStack() as clients:
        try:
            # One Prefect client for the whole run, ours and the flow engine's: each new
            # client costs an SSL context (about 17 ms of CPU) and a CSRF-token request.
            await clients.enter_async_context(AsyncClientContext.get_or_create())
            if FlowRunContext.get() is not None:
                # Inside a flow run (the job runner's, or a user's flow): the job's flow run
                # is its subflow, so the Prefect UI nests it there.
                flow_run = await isolation.create_subflow_run(flow, {"run_id": run.id}, name, tags)
            else:
                async with get_client() as client:
                    flow_run = await client.create_flow_run(
                        flow, name=name, parameters={"run_id": run.id}, tags=tags, state=Pending()
                    )
        except Exception as exc:
            catalog.observe_state(
                run.id,
                StateType.FAILED,
                "Failed",
                message=f"could not reach the Prefect API: {exc}",
            )
            raise ExecutionError(f"could not create the Prefect flow run: {exc}") from exc
        run = catalog.observe_state(
            run.id,
            StateType.PENDING,
            "Pending",
            prefect_flow_run_id=str(flow_run.id),
            replace_flow_run=True,  # a dispatched run pointed at the runner's flow run until now
        )
        await _drive(flow, flow_run, run.id)
    return catalog.get_run(run.id)


async def _drive(flow: Flow[..., Any], flow_run: FlowRun, run_id: str) -> None:
    """Run the job's flow run here; observe its final state (the hooks normally did already)."""
    try:
        if catalog.is_cancel_requested(run_id):
            from prefect.states import Cancelled

            async with get_client() as client:
                await client.set_flow_run_state(
                    flow_run.id, Cancelled(message="canceled before it started"), force=True
                )
            catalog.observe_state(
                run_id, StateType.CANCELLED, "Cancelled", message="canceled before it started"
            )
            return
        state = await run_flow_async(
            flow, flow_run=flow_run, parameters={"run_id": run_id}, return_type="state"
        )
        if state is not None:
            catalog.observe_state(run_id, state.type, state.name, message=state.message)
    except BaseException as exc:
        if _canceled_in_prefect(flow_run):
            # Prefect's cancel (the UI's Cancel on the job runner's flow run): its worker is
            # stopping this process, and no hook of the job's flow runs anywhere else.
            catalog.end_interrupted_run(run_id, "canceled in Prefect")
        else:
            catalog.observe_state(
                run_id, StateType.CRASHED, "Crashed", message=f"the job's flow crashed: {exc!r}"
            )
        if not isinstance(exc, Exception):
            raise
        logger.exception("job run %s crashed", run_id)


def _canceled_in_prefect(flow_run: FlowRun) -> bool:
    """Whether Prefect has the job's flow run (or the job runner's above it) cancelling or
    cancelled."""
    ended = (StateType.CANCELLING, StateType.CANCELLED)
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run.id).state
            if state is not None and state.type in ended:
                return True
            parent = FlowRunContext.get()
            if parent is None:
                return False
            state = client.read_flow_run(parent.flow_run.id).state if parent.flow_run else None
            return state is not None and state.type in ended
    except Exception:  # Prefect cannot say: not a cancel we know of
        return False


def wait_for_background(timeout: float | None = None) -> None:
    """Join runs started with ``wait=False`` in this process (tests, short-lived scripts)."""
    for thread in list(_background):
        thread.join(timeout)
