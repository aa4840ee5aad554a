"""``prefect-jobs up`` (``python -m jobs_plugin.stack``), end to end with real processes.

One stack is started for the module on a temporary home and free ports: a real
``prefect server start`` with its UI, the REST API under uvicorn and a process worker on the
work pool that holds the job-runner deployment. The tests talk to them over HTTP only, as a
user would. The last test interrupts the stack like Ctrl-C does, checks that no process is
left, and starts it again on the same home.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import jobs_plugin as jp
from jobs_plugin import db
from jobs_plugin.settings import get_settings
from jobs_plugin.stack import running_api_url

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 150.0
DEPLOYMENT = "prefect-jobs: run job/job-runner"


@pytest.fixture(scope="module")
def prefect_api() -> None:
    """Overrides the session's Prefect test server: the stack runs its own."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc), whatever its process group."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@dataclass
class Up:
    """A ``python -m jobs_plugin.stack`` process and what it printed."""

    home: Path
    prefect_port: int
    api_port: int
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    known_pids: set[int] = field(default_factory=set)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, home: Path, prefect_port: int, api_port: int) -> Up:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_JOBS_DATABASE_URL")
        }
        env.update(
            PREFECT_JOBS_HOME=str(home),
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        )
        ports = f"--prefect-port {prefect_port} --api-port {api_port}".split()
        process = subprocess.Popen(
            [sys.executable, "-m", "jobs_plugin.stack", "--home", str(home), *ports],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        up = cls(home, prefect_port, api_port, process)
        up.reader = threading.Thread(target=up._read, daemon=True)
        up.reader.start()
        return up

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"up exited with {self.process.returncode}:\n{self.output}")
            self.known_pids |= descendants(self.process.pid)
            return any(line.startswith("Press Ctrl-C") for line in self.lines)

        wait_for("the stack to be up", ready, timeout=START_TIMEOUT)
        self.known_pids |= descendants(self.process.pid)

    def printed(self, label: str) -> str:
        """The value of the banner row ``label``."""
        for line in self.lines:
            if line.strip().startswith(label):
                return line.strip()[len(label) :].strip()
        raise AssertionError(f"no {label!r} line in:\n{self.output}")

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def wait(self, timeout: float) -> int:
        """Wait for the supervisor to exit and for everything it printed."""
        code = self.process.wait(timeout=timeout)
        if self.reader is not None:
            self.reader.join(timeout=10)
        return code

    def interrupt(self, signum: int = signal.SIGINT, timeout: float = 45.0) -> int:
        """Signal the supervisor (as Ctrl-C would) and wait for it to exit."""
        self.known_pids |= descendants(self.process.pid)
        self.process.send_signal(signum)
        return self.wait(timeout)

    def kill_everything(self) -> None:
        """Clean-up whatever happened: no process of this stack survives the test."""
        self.known_pids |= descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in self.known_pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack") / "home"


@pytest.fixture(scope="module")
def stack(home: Path) -> Iterator[Up]:
    """A running stack, with the test workflows registered in its catalog."""
    up = Up.start(home, free_port(), free_port())
    try:
        up.wait_ready()
        with pytest.MonkeyPatch.context() as env:
            env.delenv("PREFECT_JOBS_DATABASE_URL", raising=False)
            env.setenv("PREFECT_JOBS_HOME", str(home))
            get_settings.cache_clear()
            jp.register_module("tests.workflows")
            db.dispose_all()
        get_settings.cache_clear()
        yield up
    finally:
        up.kill_everything()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def key_of(stack: Up) -> str:
    return (stack.home / "api-key").read_text().strip()


def create_job(stack: Up, name: str, order: list[Any]) -> str:
    response = httpx.post(
        f"{stack.api_url}/v1/jobs",
        json={"name": name, "jobConfigJson": {"workflowExecutionOrder": order}},
        headers=bearer(key_of(stack)),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def run_of(stack: Up, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.api_url}/v1/runs/{run_id}", headers=bearer(key_of(stack)))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


# --------------------------------------------------------------------------- tests


def test_up_prints_the_urls_and_a_key_kept_private(stack: Up) -> None:
    assert stack.printed("Prefect UI") == stack.prefect_url
    assert stack.printed("Prefect API") == f"{stack.prefect_url}/api"
    assert stack.printed("REST API") == f"{stack.api_url}/v1"
    assert stack.printed("API docs") == f"{stack.api_url}/v1/docs"
    key_file = stack.home / "api-key"
    assert stack.printed("API key (default)").startswith(key_of(stack))
    assert key_of(stack).startswith("pj_")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (stack.home / "prefect" / "prefect.db").exists()
    assert (stack.home / "catalog.db").exists()
    state = json.loads((stack.home / "up.json").read_text())
    assert state["pid"] == stack.process.pid
    assert set(state["children"]) == {"prefect-server", "api", "worker"}
    assert stack.printed("work pool") == "jobs (1 worker)"


def test_the_prefect_ui_calls_the_configured_port(stack: Up) -> None:
    assert httpx.get(f"{stack.prefect_url}/api/health").json() is True
    page = httpx.get(f"{stack.prefect_url}/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    settings = httpx.get(f"{stack.prefect_url}/ui-settings").json()
    assert settings["api_url"] == f"{stack.prefect_url}/api"


def test_the_rest_api_answers_with_the_printed_key_only(stack: Up) -> None:
    assert httpx.get(f"{stack.api_url}/v1/jobs").status_code == 401
    assert httpx.get(f"{stack.api_url}/v1/jobs", headers=bearer("pj_nope")).status_code == 401
    listed = httpx.get(f"{stack.api_url}/v1/jobs", headers=bearer(key_of(stack)))
    assert listed.status_code == 200, listed.text
    assert httpx.get(f"{stack.api_url}/v1/docs").status_code == 200


def test_a_job_executed_over_rest_completes_on_the_stack_server(stack: Up) -> None:
    job_id = create_job(stack, "over rest", ["test.noop", {"workflowId": "test.chunks"}])
    started = httpx.post(f"{stack.api_url}/v1/jobs/{job_id}/execute", headers=bearer(key_of(stack)))
    assert started.status_code == 200, started.text
    run_id = started.headers["X-Run-Id"]
    run = wait_for(
        "the run to end",
        lambda: (r := run_of(stack, run_id))["status"] in ("COMPLETED", "FAILED", "CANCELED") and r,
    )
    assert run["status"] == "COMPLETED", run
    flow_run = httpx.get(f"{stack.prefect_url}/api/flow_runs/{run['prefectFlowRunId']}")
    assert flow_run.status_code == 200
    assert flow_run.json()["state"]["type"] == "COMPLETED"
    # The API server did not run it: it went to the job-runner deployment, whose worker did.
    flow, name = DEPLOYMENT.split("/")
    deployment = httpx.get(f"{stack.prefect_url}/api/deployments/name/{flow}/{name}").json()
    dispatched = httpx.post(
        f"{stack.prefect_url}/api/flow_runs/filter",
        json={"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}},
    ).json()
    mine = [f for f in dispatched if f["parameters"].get("run_id") == run_id]
    assert len(mine) == 1 and mine[0]["state"]["type"] == "COMPLETED", dispatched
    events = httpx.get(
        f"{stack.api_url}/v1/events", params={"runId": run_id}, headers=bearer(key_of(stack))
    ).json()["data"]
    assert [e["topic"] for e in events][:2] == ["job:waiting", "job:started"]


def test_the_worker_executes_job_runner_deployment_runs(stack: Up) -> None:
    job_id = create_job(stack, "through the worker", ["test.noop"])
    flow, name = DEPLOYMENT.split("/")
    deployment = httpx.get(f"{stack.prefect_url}/api/deployments/name/{flow}/{name}").json()
    assert (deployment["work_pool_name"], deployment["entrypoint"]) == (
        "jobs",
        "flows.job_runner.run_job",
    )
    created = httpx.post(
        f"{stack.prefect_url}/api/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": {"job_id": job_id}},
    )
    assert created.status_code == 201, created.text

    def final_state() -> str | None:
        state = httpx.get(f"{stack.prefect_url}/api/flow_runs/{created.json()['id']}").json()
        kind = state["state"]["type"]
        return kind if kind in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    assert wait_for("the deployment's flow run to end", final_state, timeout=90) == "COMPLETED"
    runs = httpx.get(f"{stack.api_url}/v1/jobs/{job_id}/runs", headers=bearer(key_of(stack)))
    assert [r["status"] for r in runs.json()["data"]] == ["COMPLETED"]


def test_ctrl_c_stops_every_process_and_a_restart_reuses_the_home(stack: Up) -> None:
    key = key_of(stack)
    jobs_before = httpx.get(f"{stack.api_url}/v1/jobs", headers=bearer(key)).json()
    state = json.loads((stack.home / "up.json").read_text())
    children = set(state["children"].values())
    assert children <= stack.known_pids
    assert running_api_url(stack.home) == f"{stack.prefect_url}/api"

    assert stack.interrupt(signal.SIGINT) == 0, stack.output
    assert stack.lines[-1] == "stopped"
    left = [pid for pid in stack.known_pids if alive(pid)]
    assert left == [], f"processes left behind: {left}"
    assert not (stack.home / "up.json").exists()
    assert running_api_url(stack.home) is None

    again = Up.start(stack.home, stack.prefect_port, stack.api_port)
    try:
        again.wait_ready()
        assert again.printed("API key (default)") == f"in {stack.home / 'api-key'}"
        assert key_of(again) == key
        jobs_after = httpx.get(f"{again.api_url}/v1/jobs", headers=bearer(key))
        assert jobs_after.status_code == 200
        assert jobs_after.json()["pagination"] == jobs_before["pagination"]
        first_run = jobs_before["data"][0]["lastRunId"]
        flow_run_id = run_of(again, first_run)["prefectFlowRunId"]
        assert httpx.get(f"{again.prefect_url}/api/flow_runs/{flow_run_id}").status_code == 200
        assert again.interrupt(signal.SIGTERM) == 0, again.output
        assert [pid for pid in again.known_pids if alive(pid)] == []
    finally:
        again.kill_everything()


def test_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        up = Up.start(tmp_path / "home", busy.getsockname()[1], free_port())
        try:
            assert up.wait(timeout=60) == 1
        finally:
            up.kill_everything()
    assert "cannot listen on 127.0.0.1" in up.output and "--prefect-port" in up.output
