"""Non-blocking executes go to the job-runner deployment when the Prefect server has one: the
run waits READY for a runner or worker (and the reconciler leaves it waiting), a cancel ends
it and its flow run, and without a deployment the run executes in this process as before.

A deployment with no runner is made on the session's Prefect server for each test and removed
after it, so no other test sees it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.utilities.asyncutils import run_coro_as_sync

import jobs_plugin as jp
from jobs_plugin import dispatch, engine
from jobs_plugin.settings import get_settings


@pytest.fixture
def job_runner_deployment(catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("PREFECT_JOBS_CRASH_AFTER_SECONDS", "1")
    get_settings.cache_clear()

    async def create() -> str:
        async with get_client() as client:
            flow_id = await client.create_flow_from_name(dispatch.JOB_RUNNER_FLOW)
            deployment_id = await client.create_deployment(
                flow_id=flow_id,
                name=dispatch.JOB_RUNNER_NAME,
                entrypoint="flows/job_runner.py:run_job",
            )
            return str(deployment_id)

    async def delete(deployment_id: str) -> None:
        async with get_client() as client:
            await client.delete_deployment(deployment_id)  # type: ignore[arg-type]

    deployment_id = run_coro_as_sync(create())
    dispatch._checked.clear()
    try:
        yield deployment_id
    finally:
        run_coro_as_sync(delete(deployment_id))
        dispatch._checked.clear()


def _flow_run(flow_run_id: str) -> Any:
    async def read() -> Any:
        async with get_client() as client:
            return await client.read_flow_run(flow_run_id)  # type: ignore[arg-type]

    return run_coro_as_sync(read())


def test_execute_waits_for_a_runner_and_can_be_canceled(
    job_runner_deployment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = {"workflowExecutionOrder": ["test.noop"]}
    job = jp.create_job(name="dispatched", job_config_json=order)
    run = jp.execute(job.id, wait=False)
    assert run.status.value == "READY"
    assert [e.topic for e in jp.list_events(run_id=run.id)] == ["job:waiting"]
    assert run.prefect_flow_run_id is not None
    flow_run = _flow_run(run.prefect_flow_run_id)
    assert str(flow_run.deployment_id) == job_runner_deployment
    assert flow_run.parameters == {"job_id": job.id, "run_id": run.id}
    assert flow_run.state.type is StateType.SCHEDULED

    time.sleep(1.2)  # older than crash_after_seconds, but its flow run waits in Prefect
    assert jp.reconcile() == []
    assert jp.get_run(run.id).status.value == "READY"

    canceled = jp.cancel(run.id)
    assert canceled.status.value == "CANCELED"
    assert jp.list_events(run_id=run.id)[-1].topic == "job:canceled"
    assert _flow_run(run.prefect_flow_run_id).state.type is StateType.CANCELLED

    monkeypatch.setenv("PREFECT_JOBS_EXECUTE_VIA", "thread")
    get_settings.cache_clear()
    here = jp.execute(job.id, wait=False)  # told to: runs in this process after all
    engine.wait_for_background(60)
    assert jp.get_run(here.id).status.value == "COMPLETED"


def test_without_the_deployment_execute_runs_here_or_fails_clearly(
    catalog_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatch._checked.clear()
    job = jp.create_job(name="local", job_config_json={"workflowExecutionOrder": ["test.noop"]})
    run = jp.execute(job.id, wait=False)  # auto: no deployment on the server
    engine.wait_for_background(60)
    assert jp.get_run(run.id).status.value == "COMPLETED"

    monkeypatch.setenv("PREFECT_JOBS_EXECUTE_VIA", "deployment")
    get_settings.cache_clear()
    with pytest.raises(jp.ExecutionError) as caught:
        jp.execute(job.id, wait=False)
    assert "job-runner" in str(caught.value)
    failed = jp.get_run(jp.get_job(job.id).last_run_id or "")
    assert failed.status.value == "FAILED" and "could not create a flow run" in (failed.info or "")
