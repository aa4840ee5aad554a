"""Non-blocking executions as flow runs of the job-runner deployment, so they run wherever its
runner or workers are and outlive the process that asked.

``PREFECT_JOBS_EXECUTE_VIA`` decides: ``thread`` runs them on a background thread of the
calling process; ``deployment`` always creates a flow run of ``JOB_RUNNER_DEPLOYMENT``;
``auto`` (the default) does so when a Prefect server is configured and has that deployment
(``prefect-jobs up``, ``prefect deploy``), and uses a thread otherwise. A dispatched run is
READY (``job:waiting``) until a runner or worker starts it; its ``prefectFlowRunId`` is the
runner's flow run until then, the job's own flow run after.
"""

from __future__ import annotations

import logging
import time

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.deployments.flow_runs import arun_deployment
from prefect.exceptions import ObjectNotFound

from jobs_plugin import catalog
from jobs_plugin.errors import ExecutionError
from jobs_plugin.models import JobRun
from jobs_plugin.settings import get_settings

logger = logging.getLogger("prefect_jobs.dispatch")
JOB_RUNNER_FLOW = "prefect-jobs: run job"
JOB_RUNNER_NAME = "job-runner"
JOB_RUNNER_DEPLOYMENT = f"{JOB_RUNNER_FLOW}/{JOB_RUNNER_NAME}"
"""The full name ``run_deployment`` and ``prefect deployment run`` take."""


def job_deployment_name(job_id: str) -> str:
    """The name of the deployment of a job with schedules (see ``prefect_deployments``)."""
    return f"job-{job_id}"


def job_deployment(job_id: str) -> str:
    """Its full name, as ``run_deployment`` and the Prefect CLI take it."""
    return f"{JOB_RUNNER_FLOW}/{job_deployment_name(job_id)}"


_CHECK_SECONDS = 30.0
_checked: dict[str, tuple[float, bool]] = {}


async def _deployment_exists(api_url: str) -> bool:
    """Whether the server at ``api_url`` has the job-runner deployment (asked every 30 s)."""
    hit = _checked.get(api_url)
    if hit is not None and time.monotonic() - hit[0] < _CHECK_SECONDS:
        return hit[1]
    try:
        async with get_client() as client:
            await client.read_deployment_by_name(JOB_RUNNER_DEPLOYMENT)
        found = True
    except Exception:  # none there (404), or the server cannot say: run it here
        found = False
    _checked[api_url] = (time.monotonic(), found)
    return found


async def via_deployment() -> bool:
    mode = get_settings().execute_via
    if mode == "thread":
        return False
    if mode == "deployment":
        return True
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    return isinstance(api_url, str) and await _deployment_exists(api_url)


async def dispatch(run: JobRun) -> JobRun:
    """Create the job-runner flow run of ``run`` and mark the run READY (waiting for it); if
    Prefect refuses, the run ends FAILED saying why and ``ExecutionError`` is raised.

    A job with schedules has a deployment of its own, whose concurrency limit keeps its runs
    from overlapping: the run goes there (and to the shared one if Prefect lacks it)."""
    names = [JOB_RUNNER_DEPLOYMENT]
    if catalog.schedules_of([run.job_id])[run.job_id]:
        names.insert(0, job_deployment(run.job_id))
    for name in names:
        try:
            flow_run = await arun_deployment(
                name,
                parameters={"job_id": run.job_id, "run_id": run.id},
                timeout=0,
                as_subflow=False,
                tags=["prefect-jobs", f"job:{run.job_id}", f"job-run:{run.id}"],
            )
            break
        except Exception as exc:
            if isinstance(exc, ObjectNotFound) and name != names[-1]:
                logger.warning("no deployment %r: run %s goes to %r", name, run.id, names[-1])
                continue
            message = f"could not create a flow run of {name!r}: {exc}"
            catalog.observe_state(run.id, StateType.FAILED, "Failed", message=message)
            raise ExecutionError(message) from exc
    return catalog.observe_state(
        run.id, StateType.SCHEDULED, "Scheduled", prefect_flow_run_id=str(flow_run.id)
    )


def cancel_waiting(run: JobRun) -> bool:
    """Cancel the job-runner flow run of a READY run that no runner has started yet; whether
    it was one (then the run ends here: nobody else will)."""
    if run.status.value != "READY" or not run.prefect_flow_run_id:
        return False
    from prefect.states import Cancelled

    try:
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(run.prefect_flow_run_id)  # type: ignore[arg-type]
            if flow_run.state is None or flow_run.state.type not in (
                StateType.SCHEDULED,
                StateType.PENDING,
            ):
                return False
            client.set_flow_run_state(
                flow_run.id, Cancelled(message="canceled before it started"), force=True
            )
    except Exception as exc:
        logger.warning("could not cancel flow run %s: %s", run.prefect_flow_run_id, exc)
        return False
    return True
