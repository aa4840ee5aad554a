"""Jobs on a process work pool with two real ``prefect worker`` processes, against a real
``prefect server start``, driven through a real REST API server process, as in production:

* a job of three workflows (inline, process, deployment-backed) executed over REST completes,
  with the subflow tree (job runner → job → workflows) visible through Prefect's API and the
  progress artifact at 100%;
* an interval schedule produces runs without anyone calling execute, and pausing stops them;
* kill -9 of the worker (and the flow-run process it started) mid-workflow: the run is FAILED
  as crashed within 30 s, with ``job:failed``, and its retry, taken by the other worker,
  completes without re-running the finished workflow;
* a run executing on a worker is canceled over REST: CANCELED, and the workflow's process is
  gone.

Every process started here is stopped whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.utilities.asyncutils import run_coro_as_sync

import jobs_plugin as jp
from jobs_plugin import db, prefect_deployments
from jobs_plugin.data import store as data_store
from jobs_plugin.settings import get_settings
from jobs_plugin.stack import Child
from tests.test_deploy import Server, stop
from tests.test_deploy import server as server  # the module's real Prefect server (a fixture)
from tests.test_stack import alive, free_port, wait_for

POOL = "jobs-workers"
FINAL = ("COMPLETED", "FAILED", "CANCELED")


@pytest.fixture(scope="module")
def prefect_api() -> None:
    """Overrides the session's Prefect test server: this module starts a real one."""


@dataclass
class Cluster:
    server: Server
    api_url: str
    key: str
    workers: list[Child]
    home: Path

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )

    def prefect(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.server.api_url}{path}", timeout=30, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()

    def run(self, run_id: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/runs/{run_id}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def wait_run(self, run_id: str, timeout: float = 120) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            for worker in self.workers:
                if worker.exit_code() is not None and worker.name != "killed":
                    pytest.fail(f"{worker.name} exited:\n{worker.log_tail(40)}")
            run = self.run(run_id)
            return run if run["status"] in FINAL else None

        result: dict[str, Any] = wait_for(f"run {run_id} to end", ended, timeout=timeout)
        return result

    def wait_started(self, what: str, run_id: str, started: Path, timeout: float = 120) -> None:
        """Wait for a workflow of ``run_id`` to write ``started``; on timeout, fail with what
        the run, its flow runs in Prefect and the workers were doing."""
        deadline = time.monotonic() + timeout
        while not (started.exists() and started.read_text()):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {timeout:.0f} s waiting for {what}\n{self.explain(run_id)}"
                )
            time.sleep(0.25)

    def explain(self, run_id: str) -> str:
        run = self.run(run_id)
        runs = self.prefect(
            "POST", "/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_DESC", "limit": 5}
        )
        lines = [f"run {run_id}: {run['status']} {run.get('info')!r}"]
        lines += [
            f"flow run {f['name']}: {f['state']['type']} {f['state']['name']} "
            f"{f['state'].get('message')!r}"
            for f in runs
        ]
        for worker in self.workers:
            lines.append(f"--- {worker.name} (exit {worker.exit_code()}):\n{worker.log_tail(30)}")
        return "\n".join(lines)


@pytest.fixture(scope="module")
def cluster(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A catalog for the module, the pool with the job-runner deployment, a deployment of the
    workflow ``test.chunks``, two workers and the REST API server, all on that catalog."""
    home = tmp_path_factory.mktemp("workers")
    jobs_env = {
        "PREFECT_JOBS_HOME": str(home / "home"),
        "PREFECT_JOBS_DATABASE_URL": f"sqlite:///{home / 'catalog.db'}",
        "PREFECT_JOBS_HEARTBEAT_SECONDS": "0.5",
        "PREFECT_JOBS_CRASH_AFTER_SECONDS": "10",
        "PREFECT_JOBS_RECONCILE_SECONDS": "1",
        "PREFECT_JOBS_WORK_POOL": POOL,
    }
    saved = {name: os.environ.get(name) for name in jobs_env}
    os.environ.update(jobs_env)
    get_settings.cache_clear()
    children: list[Child] = []
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            jp.register_module("tests.workflows")
            run_coro_as_sync(prefect_deployments.register_job_runner(POOL))
            assert jp.deploy_workflow("test.chunks") == "chunks/test.chunks"
            _, key = jp.create_api_key()
            env = server.env(**jobs_env)
            for name in ("worker-1", "worker-2"):
                worker = Child(
                    name,
                    [
                        sys.executable,
                        "-m",
                        "prefect",
                        "worker",
                        "start",
                        "--pool",
                        POOL,
                        "--name",
                        name,
                    ],
                    {
                        **env,
                        "PREFECT_WORKER_QUERY_SECONDS": "1",
                        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                    },
                    home / f"{name}.log",
                    stop_signal=signal.SIGINT,
                )
                worker.start()
                children.append(worker)
            port = free_port()
            api = Child(
                "api",
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "jobs_plugin.rest:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env,
                home / "api.log",
            )
            api.start()
            children.append(api)
            api_url = f"http://127.0.0.1:{port}/v1"

            def answers() -> bool:
                if api.exit_code() is not None:
                    pytest.fail(f"the API server exited:\n{api.log_tail()}")
                try:
                    return httpx.get(f"{api_url}/openapi.json", timeout=5).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for("the REST API", answers, timeout=60)
            yield Cluster(server, api_url, key, children[:2], home)
    finally:
        for child in children:
            stop(child)
        db.dispose_all()
        data_store.dispose_all()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


def create_job(cluster: Cluster, name: str, order: list[Any], **extra: Any) -> str:
    with cluster.client() as client:
        response = client.post(
            "/jobs",
            json={"name": name, "jobConfigJson": {"workflowExecutionOrder": order}, **extra},
        )
    assert response.status_code == 201, response.text
    job_id: str = response.json()["data"]["id"]
    return job_id


def execute(cluster: Cluster, job_id: str) -> str:
    with cluster.client() as client:
        response = client.post(f"/jobs/{job_id}/execute")
    assert response.status_code == 200, response.text
    run_id: str = response.headers["X-Run-Id"]
    return run_id


def start_sleeping_process(cluster: Cluster, tmp_path: Path, name: str) -> tuple[str, str, int]:
    """A job whose first workflow sleeps in a process of its own, executed until that process
    runs: (job id, run id, the workflow's pid)."""
    started = tmp_path / "started"
    job_id = create_job(
        cluster,
        name,
        [
            {
                "workflowId": "test.sync-sleep",
                "isolation": "process",
                "parameters": {"seconds": 300, "started_path": str(started)},
            },
            "test.noop",
        ],
    )
    run_id = execute(cluster, job_id)
    cluster.wait_started("the workflow to start", run_id, started)
    return job_id, run_id, int(started.read_text())


def children_of(cluster: Cluster, flow_run_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cluster.prefect(
        "POST",
        "/flow_runs/filter",
        json={
            "flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}},
            "sort": "START_TIME_ASC",
        },
    )
    return found


def test_three_workflows_one_on_a_deployment_complete_on_the_workers(
    cluster: Cluster, tmp_path: Path
) -> None:
    log = tmp_path / "log.jsonl"
    job_id = create_job(
        cluster,
        "three ways",
        [
            {"workflowId": "test.record", "parameters": {"path": str(log), "label": "inline"}},
            {"workflowId": "test.noop", "isolation": "process"},
            {"workflowId": "test.chunks", "isolation": "deployment", "parameters": {"count": 3}},
        ],
    )
    run_id = execute(cluster, job_id)
    assert cluster.run(run_id)["status"] in ("READY", "EXECUTING", "COMPLETED")
    run = cluster.wait_run(run_id)
    assert run["status"] == "COMPLETED", run
    assert (run["parts"], run["processed"], run["progress"]) == (5, 5, 100)
    assert [s["status"] for s in run["workflowRuns"]] == ["COMPLETED"] * 3
    assert [s["isolation"] for s in run["workflowRuns"]] == ["inline", "process", "deployment"]
    assert json.loads(log.read_text())["label"] == "inline"

    # The tree in Prefect: the job runner's flow run → the job's flow run → three subflows.
    job_flow_run = cluster.prefect("GET", f"/flow_runs/{run['prefectFlowRunId']}")
    assert job_flow_run["state"]["type"] == "COMPLETED"
    assert f"job:{job_id}" in job_flow_run["tags"]
    parent_task = cluster.prefect("GET", f"/task_runs/{job_flow_run['parent_task_run_id']}")
    runner_flow_run = cluster.prefect("GET", f"/flow_runs/{parent_task['flow_run_id']}")
    assert runner_flow_run["name"] == f"run job {job_id}"
    assert runner_flow_run["parameters"] == {"job_id": job_id, "run_id": run_id}
    assert runner_flow_run["deployment_id"] is not None
    assert [c["id"] for c in children_of(cluster, runner_flow_run["id"])] == [job_flow_run["id"]]
    steps = children_of(cluster, job_flow_run["id"])
    assert [s["name"] for s in steps] == [
        "three ways/01-test.record",
        "three ways/02-test.noop",
        "three ways/03-test.chunks",
    ]
    assert [s["state"]["type"] for s in steps] == ["COMPLETED"] * 3
    assert [s["id"] for s in steps] == [w["prefectFlowRunId"] for w in run["workflowRuns"]]
    on_pool = cluster.prefect("GET", f"/deployments/{steps[2]['deployment_id']}")
    assert (on_pool["name"], on_pool["work_pool_name"]) == ("test.chunks", POOL)

    artifacts = cluster.prefect(
        "POST",
        "/artifacts/filter",
        json={
            "artifacts": {
                "flow_run_id": {"any_": [job_flow_run["id"]]},
                "type": {"any_": ["progress"]},
            }
        },
    )
    assert [float(a["data"]) for a in artifacts] == [100.0]


def test_an_interval_schedule_runs_the_job_until_paused(cluster: Cluster) -> None:
    job_id = create_job(cluster, "every few seconds", ["test.noop"])
    with cluster.client() as client:
        added = client.post(f"/jobs/{job_id}/schedules", json={"intervalSeconds": 3})
        assert added.status_code == 201, added.text
        schedule_id = added.json()["data"]["id"]

        def completed() -> int:
            runs = client.get(f"/jobs/{job_id}/runs").json()["data"]
            return sum(r["status"] == "COMPLETED" for r in runs) >= 2

        wait_for("two scheduled runs to complete", completed, timeout=90)
        paused = client.patch(f"/jobs/{job_id}/schedules/{schedule_id}", json={"active": False})
        assert paused.json()["data"]["active"] is False

        # Prefect dropped the runs it had scheduled ahead; one a worker had already taken
        # (it fetches runs due within 5 s) still runs. After that, nothing new is scheduled.
        def flow_runs() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = cluster.prefect(
                "POST",
                "/flow_runs/filter",
                json={"deployments": {"name": {"any_": [f"job-{job_id}"]}}},
            )
            return found

        time.sleep(6)
        wait_for(
            "the runs taken before the pause to end",
            lambda: all(f["state"]["type"] in ("COMPLETED", "CANCELLED") for f in flow_runs()),
            timeout=60,
        )
        before = len(flow_runs())
        time.sleep(9)  # three intervals
        assert len(flow_runs()) == before
        runs = client.get(f"/jobs/{job_id}/runs").json()
    assert runs["pagination"]["totalCount"] == sum(
        f["state"]["type"] == "COMPLETED" for f in flow_runs()
    )
    assert {r["status"] for r in runs["data"]} == {"COMPLETED"}


def test_a_worker_killed_mid_workflow_fails_the_run_and_retry_resumes(
    cluster: Cluster, tmp_path: Path
) -> None:
    log, started = tmp_path / "log.jsonl", tmp_path / "started"
    job_id = create_job(
        cluster,
        "killed worker",
        [
            {"workflowId": "test.record", "parameters": {"path": str(log), "label": "first"}},
            {
                "workflowId": "test.sync-sleep",
                "parameters": {"seconds": 3, "started_path": str(started)},
            },
            {"workflowId": "test.record", "parameters": {"path": str(log), "label": "last"}},
        ],
    )
    run_id = execute(cluster, job_id)
    cluster.wait_started("the second workflow to start", run_id, started)
    flow_run_pid = int(started.read_text())  # the job's process, started by one of the workers
    worker = next(w for w in cluster.workers if flow_run_pid in _descendants(w))
    worker.signal_group(signal.SIGKILL)  # the machine is gone: the worker and what it ran
    os.kill(flow_run_pid, signal.SIGKILL)
    assert worker.process is not None
    worker.process.wait(timeout=30)
    worker.name = "killed"
    killed_at = time.monotonic()
    started.unlink()

    run = wait_for(
        "the reconciler to end the run",
        lambda: (r := cluster.run(run_id))["status"] in FINAL and r,
        timeout=30,
    )
    assert time.monotonic() - killed_at < 30
    assert run["status"] == "FAILED", run
    assert run["info"].startswith("crashed: nothing heard from the process"), run["info"]
    assert [s["status"] for s in run["workflowRuns"]] == ["COMPLETED", "FAILED", "NOT_RUN"]
    with cluster.client() as client:
        events = client.get("/events", params={"runId": run_id}).json()["data"]
    assert [e["topic"] for e in events].count("job:failed") == 1

    with cluster.client() as client:
        retried = client.post(f"/jobs/{job_id}/retry")
    assert retried.status_code == 200, retried.text
    retry_id = retried.headers["X-Run-Id"]
    final = cluster.wait_run(retry_id)
    assert final["status"] == "COMPLETED", final
    labels = [json.loads(line)["label"] for line in log.read_text().splitlines()]
    assert labels == ["first", "last"]  # the finished workflow did not run again
    assert final["workflowRuns"][0]["reusedFrom"] is not None


def test_a_run_on_a_worker_is_canceled_and_its_workflow_process_is_gone(
    cluster: Cluster, tmp_path: Path
) -> None:
    job_id, run_id, workflow_pid = start_sleeping_process(cluster, tmp_path, "canceled on a worker")
    assert alive(workflow_pid)
    with cluster.client() as client:
        canceled = client.post(f"/jobs/{job_id}/cancel")
    assert canceled.status_code == 200, canceled.text
    run = cluster.wait_run(run_id, timeout=60)
    assert run["status"] == "CANCELED", run
    assert [s["status"] for s in run["workflowRuns"]] == ["CANCELED", "NOT_RUN"]
    wait_for("the workflow's process to be gone", lambda: not alive(workflow_pid), timeout=10)
    with cluster.client() as client:
        events = client.get("/events", params={"runId": run_id}).json()["data"]
    assert events[-1]["topic"] == "job:canceled"
    step = cluster.prefect("GET", f"/flow_runs/{run['workflowRuns'][0]['prefectFlowRunId']}")
    assert step["state"]["type"] == "CANCELLED"


def _descendants(worker: Child) -> set[int]:
    from tests.test_stack import descendants

    return descendants(worker.pid) if worker.pid else set()


def test_a_cancel_from_prefect_ends_the_job_run_canceled(cluster: Cluster, tmp_path: Path) -> None:
    """What the Prefect UI's Cancel button does to the job runner's flow run: the worker stops
    its process; the job run ends CANCELED and no workflow process is left behind."""
    _, run_id, workflow_pid = start_sleeping_process(cluster, tmp_path, "canceled in prefect")
    job_flow_run = cluster.prefect("GET", f"/flow_runs/{cluster.run(run_id)['prefectFlowRunId']}")
    parent_task = cluster.prefect("GET", f"/task_runs/{job_flow_run['parent_task_run_id']}")
    cluster.prefect(
        "POST",
        f"/flow_runs/{parent_task['flow_run_id']}/set_state",
        json={"state": {"type": "CANCELLING", "message": "from the UI"}, "force": True},
    )
    run = cluster.wait_run(run_id, timeout=60)
    assert run["status"] == "CANCELED", (run["info"], run["workflowRuns"])
    assert run["workflowRuns"][0]["status"] == "CANCELED"
    wait_for("the workflow's process to be gone", lambda: not alive(workflow_pid), timeout=15)


def test_an_execute_overlapping_a_running_scheduled_job_is_skipped(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A job with schedules runs through its own deployment, whose concurrency limit (1, skip)
    makes Prefect cancel a second run while the first executes; the reconciler ends it."""
    started, release = tmp_path / "started", tmp_path / "release"
    sleep = {"seconds": 120, "started_path": str(started), "release_path": str(release)}
    job_id = create_job(
        cluster,
        "no overlap",
        [{"workflowId": "test.sleep", "parameters": sleep}],
        schedules=[{"cron": "0 0 1 1 *", "active": False}],
    )
    first = execute(cluster, job_id)
    cluster.wait_started("the first run to start", first, started)
    second = execute(cluster, job_id)
    skipped = cluster.wait_run(second, timeout=60)
    assert skipped["status"] == "CANCELED", skipped
    assert cluster.run(first)["status"] == "EXECUTING"
    release.write_text("go")
    assert cluster.wait_run(first)["status"] == "COMPLETED"
