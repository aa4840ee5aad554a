"""The job runner: the one Prefect flow every prefect-jobs deployment runs.

A flow run of the ``job-runner`` deployment (on a process work pool by ``prefect-jobs up`` or
``prefect.yaml``; served with no pool by ``deployments/serve.py``), or of a scheduled job's own
deployment (``job-<job id>``), loads a job from the catalog, compiles it and runs it (the job's
flow run is a subflow of the runner's). The runner's flow run ends as the job run does: Completed,
Failed (the flow raises ``JobRunFailed``) or Cancelled.

The catalog it reads is the one the runner's process is configured for
(``PREFECT_JOBS_HOME`` / ``PREFECT_JOBS_DATABASE_URL``): a worker or runner must be started with
the same environment as the code that creates the jobs.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import Cancelled

import jobs_plugin as jp
from jobs_plugin import engine
from jobs_plugin.dispatch import JOB_RUNNER_DEPLOYMENT, JOB_RUNNER_FLOW, JOB_RUNNER_NAME

FLOW_NAME = JOB_RUNNER_FLOW
DEPLOYMENT_NAME = JOB_RUNNER_NAME
DEPLOYMENT = JOB_RUNNER_DEPLOYMENT
"""The full name ``run_deployment`` and ``prefect deployment run`` take."""


class JobRunFailed(Exception):
    """The job run ended FAILED; the message is its outcome."""


@flow(
    name=FLOW_NAME,
    flow_run_name="run job {job_id}",
    description="Load a job from the prefect-jobs catalog, compile it and run it.",
    persist_result=False,
)
async def run_job(
    job_id: str,
    run_id: str | None = None,
    version: int | None = None,
    organization: str | None = None,
) -> Any:
    """Execute job ``job_id`` (its current version, or ``version``) for ``organization``
    (default: the settings' default organization) and return the run's final status.

    ``run_id``: the run a non-blocking execute dispatched here (READY, waiting for this flow
    run): it is executed instead of a new one; one that has started or ended already is left
    as it is.
    """
    if run_id is not None:
        run = jp.api.run_public(await engine.launch_existing(run_id))
    else:
        run = await jp.aexecute(job_id, version=version, organization=organization)
    outcome = (run.outcome or {}).get("message")
    summary = f"job run {run.id} ended {run.status.value}" + (f": {outcome}" if outcome else "")
    if run.status is jp.JobStatus.FAILED:
        raise JobRunFailed(summary)
    if run.status is jp.JobStatus.CANCELED:
        return Cancelled(message=summary)
    return run.status.value
