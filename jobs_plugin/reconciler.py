"""Ends the runs whose process died, so that no run stays EXECUTING for ever.

The process that runs a job's flow (the caller of ``execute``, the API server's background
thread, a runner or a worker) records a heartbeat on the run every ``heartbeat_seconds``. A run
that is unfinished and has not been heard of for ``crash_after_seconds`` is looked at:

* its Prefect flow run is still SCHEDULED, PENDING or PAUSED (waiting for a worker, or paused
  on purpose): it is left alone;
* Prefect has ended its flow run (a worker reported it Crashed, it was Cancelled...), or is
  cancelling it or the job runner's flow run above it (the Prefect UI's Cancel, after which
  the worker stopped the process): that state is applied, through the translation table
  (cancelling reads as Cancelled);
* otherwise (the flow run is RUNNING with nobody behind it, or there is none, or Prefect cannot
  be asked): the run ends FAILED, ``info`` "crashed: ..." with the reason, and ``job:failed``;
  its Prefect flow run is set Crashed too, so the Prefect UI agrees.

Workflows that completed stay COMPLETED, the interrupted one becomes FAILED and the ones after
it NOT_RUN, so ``retry`` resumes at the interrupted workflow. Reconciling is idempotent and safe
in several processes at once: each end is re-checked under the run's lock.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prefect.client.schemas.objects import StateType

from jobs_plugin import catalog
from jobs_plugin.models import JobRun, utcnow
from jobs_plugin.settings import get_settings

logger = logging.getLogger("prefect_jobs.reconciler")
_WAITING = frozenset({StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED})


@dataclass(frozen=True)
class _Seen:
    """What Prefect says of a flow run."""

    type: StateType
    name: str
    message: str | None


def _prefect_state(flow_run_id: str | None) -> _Seen | None:
    """The state of the flow run, or ``None`` when there is none or Prefect cannot say."""
    if not flow_run_id:
        return None
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state  # type: ignore[arg-type]
    except Exception as exc:  # unreachable, or the flow run is gone
        logger.warning("could not read Prefect flow run %s: %s", flow_run_id, exc)
        return None
    if state is None:
        return None
    if state.type in (StateType.RUNNING, StateType.CANCELLING) and _parent_canceled(flow_run_id):
        return _Seen(StateType.CANCELLED, "Cancelled", "canceled in Prefect")
    if state.type is StateType.CANCELLING:  # its worker stopped it on a Prefect cancel
        return _Seen(StateType.CANCELLED, "Cancelled", state.message or "canceled in Prefect")
    return _Seen(state.type, state.name or state.type.value.capitalize(), state.message)


def _parent_canceled(flow_run_id: str) -> bool:
    """Whether the flow run above the job's (the job runner's) is cancelling or cancelled: the
    Prefect UI's Cancel, whose worker then stopped the job's process."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
            if flow_run.parent_task_run_id is None:
                return False
            task_run = client.read_task_run(flow_run.parent_task_run_id)
            if task_run.flow_run_id is None:
                return False
            state = client.read_flow_run(task_run.flow_run_id).state
    except Exception:
        return False
    return state is not None and state.type in (StateType.CANCELLING, StateType.CANCELLED)


def _crash_flow_run(flow_run_id: str | None, message: str) -> None:
    if not flow_run_id:
        return
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
    except Exception as exc:
        logger.warning("could not mark Prefect flow run %s crashed: %s", flow_run_id, exc)


def reconcile_once(now: datetime | None = None) -> list[JobRun]:
    """One pass over the unfinished runs not heard of lately; the runs it ended."""
    settings = get_settings()
    now = now or utcnow()
    older_than = now - timedelta(seconds=settings.crash_after_seconds)
    ended: list[JobRun] = []
    for run in catalog.stale_runs(older_than):
        seen = _prefect_state(run.prefect_flow_run_id)
        if seen is not None and seen.type in _WAITING:
            continue
        silent = (now - run.last_sign_of_life).total_seconds()
        final: tuple[Any, str, str]
        if seen is not None and seen.type not in (StateType.RUNNING, StateType.CANCELLING):
            message = seen.message or f"Prefect ended the flow run {seen.name}"
            final = (seen.type, seen.name, message)
        else:
            reason = (
                f"crashed: nothing heard from the process running it for {silent:.0f} s "
                f"(last sign of life {run.last_sign_of_life.isoformat(timespec='seconds')})"
            )
            final = (StateType.CRASHED, "Crashed", reason)
        result = catalog.end_stale_run(run.id, older_than, *final)
        if result is None:
            continue  # it ended, or came alive, meanwhile
        logger.warning("run %s ended %s: %s", run.id, result.status.value, final[2])
        if final[0] is StateType.CRASHED:
            _crash_flow_run(run.prefect_flow_run_id, final[2])
        ended.append(result)
    return ended


class Reconciler:
    """``reconcile_once`` every ``interval`` seconds on a background thread."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Reconciler:
        self._thread = threading.Thread(
            target=self._loop, name="prefect-jobs-reconciler", daemon=True
        )
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                reconcile_once()
            except Exception:
                logger.exception("reconciling runs failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
