"""The repository's ``prefect.yaml`` against a real ``prefect server start``, deployed with the
real ``prefect`` CLI and run by a real process worker: the job-runner deployment executes a job
of the test catalog to COMPLETED (and a failing job to FAILED).

The server, the worker and every flow-run process they spawn are stopped whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.responses import DeploymentResponse

import jobs_plugin as jp
from jobs_plugin.stack import Child
from tests.test_stack import DEPLOYMENT, REPO, free_port, wait_for

POOL = "jobs"
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@pytest.fixture(scope="module")
def prefect_api() -> None:
    """Overrides the session's Prefect test server: this module starts a real one."""


@dataclass(frozen=True)
class Server:
    api_url: str
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment pointed at the server (and only at it)."""
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
            **extra,
        )
        return env


def stop(child: Child, grace: float = 15.0) -> None:
    """SIGINT the child's process group, SIGKILL it after ``grace`` seconds."""
    if child.process is None:
        return
    child.signal_group(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.process.wait(timeout=grace)
    child.signal_group(signal.SIGKILL)
    child.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("deploy")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    server = Server(api_url, home / "prefect")
    child = Child(
        "prefect-server",
        [sys.executable, "-m", "prefect", "server", "start", "--port", str(port)],
        server.env(PREFECT_SERVER_API_PORT=str(port), PREFECT_UI_API_URL=api_url),
        home / "server.log",
    )
    child.start()
    try:

        def healthy() -> bool:
            if child.exit_code() is not None:
                pytest.fail(f"prefect server start exited:\n{child.log_tail()}")
            try:
                return httpx.get(f"{api_url}/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the Prefect server", healthy, timeout=150)
        yield server
    finally:
        stop(child)


def prefect_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=REPO,
        env=server.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def deployed(server: Server) -> subprocess.CompletedProcess[str]:
    """``prefect --no-prompt deploy --all`` from the repository root, after creating the pool."""
    pool = prefect_cli(server, "work-pool", "create", POOL, "--type", "process")
    assert pool.returncode == 0, pool.stdout + pool.stderr
    return prefect_cli(server, "--no-prompt", "deploy", "--all")


def read_deployment(server: Server) -> DeploymentResponse:
    async def read() -> DeploymentResponse:
        async with PrefectClient(server.api_url) as client:
            return await client.read_deployment_by_name(DEPLOYMENT)

    return asyncio.run(read())


def test_deploy_all_declares_the_job_runner_for_a_process_pool(
    server: Server, deployed: subprocess.CompletedProcess[str]
) -> None:
    output = deployed.stdout + deployed.stderr
    assert deployed.returncode == 0, (
        f"prefect deploy failed (a 422 on /workers/filter means FastAPI >= 0.151, which "
        f"rejects the null limit Prefect 3.8 sends):\n{output}"
    )
    assert f"Deployment '{DEPLOYMENT}' successfully created" in " ".join(output.split())

    deployment = read_deployment(server)
    assert deployment.entrypoint == "flows/job_runner.py:run_job"
    assert deployment.work_pool_name == POOL
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
    ]
    assert deployment.parameter_openapi_schema is not None
    assert deployment.parameter_openapi_schema["required"] == ["job_id"]
    [schedule] = deployment.schedules
    assert schedule.active is False
    assert schedule.parameters == {"job_id": "us_jb_example"}


def test_a_process_worker_runs_jobs_through_the_deployment(
    server: Server,
    deployed: subprocess.CompletedProcess[str],
    catalog_url: str,
    tmp_path: Path,
) -> None:
    record = tmp_path / "record.jsonl"
    good = jp.create_job(
        name="deployed job",
        job_config_json={
            "workflowExecutionOrder": [
                {"workflowId": "test.record", "parameters": {"path": str(record), "label": "a"}},
                {"workflowId": "test.chunks", "parameters": {"count": 3}},
            ]
        },
    )
    bad = jp.create_job(
        name="deployed failure",
        job_config_json={
            "workflowExecutionOrder": [{"workflowId": "test.fail", "parameters": {"message": "x"}}]
        },
    )
    deployment = read_deployment(server)

    # The worker (and the flow-run processes it spawns) must use the same catalog as this test:
    # catalog_url put PREFECT_JOBS_DATABASE_URL and PREFECT_JOBS_HOME in this environment.
    worker = Child(
        "worker",
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--name", "test"],
        server.env(PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="5"),
        tmp_path / "worker.log",
    )
    worker.start()
    try:
        flow_runs = {}
        for job in (good, bad):
            created = httpx.post(
                f"{server.api_url}/deployments/{deployment.id}/create_flow_run",
                json={"parameters": {"job_id": job.id}},
            )
            assert created.status_code == 201, created.text
            flow_runs[job.id] = created.json()["id"]

        def states() -> dict[str, Any] | None:
            if worker.exit_code() is not None:
                pytest.fail(f"the worker exited:\n{worker.log_tail(40)}")
            found = {
                job_id: httpx.get(f"{server.api_url}/flow_runs/{run_id}").json()["state"]
                for job_id, run_id in flow_runs.items()
            }
            return found if all(s["type"] in FINAL for s in found.values()) else None

        final = wait_for("the deployment's flow runs to end", states, timeout=120)
    finally:
        stop(worker)
    log = worker.log_tail(60)

    assert final[good.id]["type"] == "COMPLETED", log
    [run] = jp.list_runs(good.id).items
    assert (run.status, run.processed, run.parts) == (jp.JobStatus.COMPLETED, 4, 4)
    assert [json.loads(line)["label"] for line in record.read_text().splitlines()] == ["a"]

    assert final[bad.id]["type"] == "FAILED", log
    assert "ended FAILED" in (final[bad.id]["message"] or ""), final[bad.id]
    [failed] = jp.list_runs(bad.id).items
    assert failed.status is jp.JobStatus.FAILED
