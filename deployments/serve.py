"""Serve the job-runner deployment from this machine, with no work pool or worker.

    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/serve.py [--poll-seconds 2]

The runner registers ``prefect-jobs: run job/job-runner`` (replacing a work-pool deployment of
the same name, see README.md) and executes its flow runs in subprocesses until Ctrl-C. Start it
with the same ``PREFECT_JOBS_*`` environment as the code that creates the jobs: the runs read
the catalog those variables name. With no work pool there are no job schedules or
``deployment``-isolated workflows: ``prefect-jobs up`` (a pool and workers) has them.
"""

from __future__ import annotations

import argparse

from prefect import serve
from prefect.types.entrypoint import EntrypointType

from flows.job_runner import DEPLOYMENT_NAME, run_job


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the job-runner deployment until Ctrl-C.")
    parser.add_argument(
        "--poll-seconds",
        type=int,
        default=2,
        help="How often to ask the server for runs to execute (Prefect's default is 10).",
    )
    options = parser.parse_args()
    deployment = run_job.to_deployment(
        name=DEPLOYMENT_NAME,
        # The module path resolves through the installed package, whatever the current folder.
        entrypoint_type=EntrypointType.MODULE_PATH,
        tags=["prefect-jobs"],
        description="Runs a prefect-jobs job; served by deployments/serve.py.",
    )
    serve(deployment, pause_on_shutdown=False, query_seconds=options.poll_seconds)


if __name__ == "__main__":
    main()
