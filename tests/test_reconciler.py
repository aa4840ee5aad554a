"""Runs in other processes, for real: a job process killed with SIGKILL mid-workflow leaves its
run EXECUTING, the reconciler ends it FAILED (crashed, with the reason) and ``job:failed``, and
``retry`` completes it without running the finished workflow again; a run executing in another
process is canceled from this one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

import jobs_plugin as jp
from jobs_plugin import catalog
from jobs_plugin.settings import get_settings

REPO = Path(__file__).resolve().parents[1]
RUN_JOB = """
import sys
import jobs_plugin as jp
jp.register_module("tests.workflows")
jp.execute(sys.argv[1])
"""


@pytest.fixture
def fast_crash(catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_JOBS_HEARTBEAT_SECONDS", "0.5")
    monkeypatch.setenv("PREFECT_JOBS_CRASH_AFTER_SECONDS", "3")
    get_settings.cache_clear()


def _job_process(job_id: str) -> subprocess.Popen[bytes]:
    """``execute`` in a process of its own, on this test's catalog and Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, PREFECT_API_URL=str(PREFECT_API_URL.value()))
    return subprocess.Popen(
        [sys.executable, "-c", RUN_JOB, job_id],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_killed_job_process_is_failed_and_its_retry_resumes(
    fast_crash: None, tmp_path: Path
) -> None:
    log, started, release = tmp_path / "log.jsonl", tmp_path / "started", tmp_path / "release"
    job = jp.create_job(
        name="killed",
        job_config_json={
            "workflowExecutionOrder": [
                {"workflowId": "test.record", "parameters": {"path": str(log), "label": "first"}},
                {
                    "workflowId": "test.sleep",
                    "parameters": {
                        "seconds": 120,
                        "started_path": str(started),
                        "release_path": str(release),
                    },
                },
                {"workflowId": "test.record", "parameters": {"path": str(log), "label": "last"}},
            ]
        },
    )
    process = _job_process(job.id)
    try:
        _wait_for(started.exists, 120, "the second workflow to start")
        run_id = jp.get_job(job.id).last_run_id
        assert run_id is not None
        _wait_for(lambda: jp.get_run(run_id).heartbeat_at is not None, 10, "a heartbeat")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert jp.get_run(run_id).status.value == "EXECUTING"
    assert jp.reconcile() == []  # heard of a moment ago: not crashed yet

    killed_at = time.monotonic()
    ended: list[Any] = []
    _wait_for(lambda: bool(ended.extend(jp.reconcile()) or ended), 30, "the reconciler")
    assert time.monotonic() - killed_at < 30
    [run] = ended
    assert run.id == run_id and run.status.value == "FAILED"
    assert run.info and run.info.startswith("crashed: nothing heard from the process")
    events = jp.list_events(run_id=run_id)
    assert events[-1].topic == "job:failed"
    assert [e.topic for e in events].count("job:failed") == 1
    steps = [s.status.value for s in jp.list_workflow_runs(run_id)]
    assert steps == ["COMPLETED", "FAILED", "NOT_RUN"]
    assert jp.reconcile() == []  # idempotent: nothing left to do
    assert [e.topic for e in jp.list_events(run_id=run_id)].count("job:failed") == 1

    async def prefect_state() -> Any:
        async with get_client() as client:
            return (await client.read_flow_run(run.prefect_flow_run_id)).state  # type: ignore[arg-type]

    from prefect.utilities.asyncutils import run_coro_as_sync

    state = run_coro_as_sync(prefect_state())
    assert state is not None and state.type is StateType.CRASHED

    release.write_text("go")
    retried = jp.retry(run_id)
    assert retried.status.value == "COMPLETED", retried.outcome
    labels = [json.loads(line)["label"] for line in log.read_text().splitlines()]
    assert labels == ["first", "last"]  # the first workflow did not run again
    assert retried.workflow_runs[0].reused_from is not None


def test_live_waiting_and_caller_run_jobs_are_left_alone(fast_crash: None) -> None:
    managed = jp.create_job(name="alive", job_config_json={"workflowExecutionOrder": ["test.noop"]})
    live = catalog.create_run(managed.id, jp.api.organization_id())
    catalog.beat(live.id)
    mine = jp.create_job(name="mine", managed=False)
    waiting = jp.execute(mine.id)  # READY until its caller acks it, for as long as it likes
    time.sleep(3.2)  # both are now older than crash_after_seconds...
    catalog.beat(live.id)  # ...but the live one's process is still beating
    assert jp.reconcile() == []
    assert jp.get_run(live.id).status.value == "PLANNING"
    assert jp.get_run(waiting.id).status.value == "READY"


def test_a_run_stuck_in_planning_without_a_flow_run_is_failed(fast_crash: None) -> None:
    job = jp.create_job(name="orphan", job_config_json={"workflowExecutionOrder": ["test.noop"]})
    orphan = catalog.create_run(job.id, jp.api.organization_id())  # its process died planning
    _wait_for(lambda: bool(jp.reconcile()), 30, "the reconciler")
    run = jp.get_run(orphan.id)
    assert run.status.value == "FAILED" and run.info and run.info.startswith("crashed")
    assert jp.get_job(job.id).status.value == "FAILED"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_run_executing_in_another_process_is_canceled_from_here(
    fast_crash: None, tmp_path: Path
) -> None:
    """Cancel goes through the catalog: the process running the job (here a separate one, as
    a runner or worker would be) stops it, kills the workflow's own process, ends CANCELED."""
    started = tmp_path / "started"
    job = jp.create_job(
        name="canceled from elsewhere",
        job_config_json={
            "workflowExecutionOrder": [
                {
                    "workflowId": "test.sync-sleep",
                    "isolation": "process",
                    "parameters": {"seconds": 120, "started_path": str(started)},
                }
            ]
        },
    )
    process = _job_process(job.id)
    try:
        _wait_for(lambda: started.exists() and started.read_text().isdigit(), 120, "the workflow")
        workflow_pid = int(started.read_text())
        run_id = jp.get_job(job.id).last_run_id
        assert run_id is not None
        jp.cancel(run_id)
        assert process.wait(timeout=60) == 0  # the job process finished its run and exited
    finally:
        if process.poll() is None:
            process.kill()
    run = jp.get_run(run_id)
    assert run.status.value == "CANCELED", run.outcome
    assert jp.list_events(run_id=run_id)[-1].topic == "job:canceled"
    _wait_for(lambda: _gone(workflow_pid), 10, "the workflow's process to be gone")
    assert jp.reconcile() == []
