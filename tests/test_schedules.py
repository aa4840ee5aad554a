"""Job schedules are kept on a Prefect deployment of the job runner, one per scheduled job, on
the session's Prefect test server: created with the first schedule, changed, paused, resumed
and deleted with the job; the overlap rule becomes the deployment's concurrency limit; a change
Prefect cannot take writes nothing. (That scheduled runs really start is tested with real
workers in ``test_workers``.)

The job-runner deployment (on a process pool, no worker) exists only while a test of this
module runs, so no other test dispatches to it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.exceptions import ObjectNotFound
from prefect.utilities.asyncutils import run_coro_as_sync

import jobs_plugin as jp
from jobs_plugin import dispatch, prefect_deployments
from tests.api.conftest import api_client
from tests.api.conftest import server_url as server_url  # a fixture
from tests.test_cli import cli, error_line

POOL = "jobs-schedules-test"
ORDER = {"workflowExecutionOrder": ["test.noop"]}


async def _delete_job_runner() -> None:
    async with get_client() as client:
        try:
            deployment = await client.read_deployment_by_name(dispatch.JOB_RUNNER_DEPLOYMENT)
        except ObjectNotFound:
            return
        await client.delete_deployment(deployment.id)


@pytest.fixture
def job_runner(catalog_url: str) -> Iterator[None]:
    run_coro_as_sync(prefect_deployments.register_job_runner(POOL))
    dispatch._checked.clear()
    try:
        yield
    finally:
        for job in jp.list_jobs(page_size=500).items:
            if job.schedules:
                jp.update_job(job.id, schedules=[])
        run_coro_as_sync(_delete_job_runner())
        dispatch._checked.clear()


def deployment_of(job_id: str) -> Any:
    async def read() -> Any:
        async with get_client() as client:
            try:
                return await client.read_deployment_by_name(dispatch.job_deployment(job_id))
            except ObjectNotFound:
                return None

    return run_coro_as_sync(read())


def test_a_job_with_schedules_gets_a_deployment_in_step_with_them(job_runner: None) -> None:
    job = jp.create_job(
        name="daily report",
        job_config_json=ORDER,
        schedules=[
            {"cron": "0 6 * * *", "timezone": "Europe/Berlin"},
            {"intervalSeconds": 3600, "active": False},
        ],
    )
    assert job.prefect_deployment == f"prefect-jobs: run job/job-{job.id}"
    daily, hourly = job.schedules
    assert (daily.cron, daily.timezone, daily.active) == ("0 6 * * *", "Europe/Berlin", True)
    assert (hourly.interval_seconds, hourly.timezone, hourly.active) == (3600, "UTC", False)

    deployment = deployment_of(job.id)
    assert deployment.work_pool_name == POOL
    assert deployment.entrypoint == "flows.job_runner.run_job"
    assert deployment.parameters == {"job_id": job.id, "organization": "default"}
    assert f"job:{job.id}" in deployment.tags
    by_slug = {s.slug: s for s in deployment.schedules}
    assert set(by_slug) == {daily.id, hourly.id}
    assert by_slug[daily.id].schedule.cron == "0 6 * * *"
    assert by_slug[daily.id].schedule.timezone == "Europe/Berlin"
    assert by_slug[daily.id].active is True
    assert by_slug[hourly.id].schedule.interval.total_seconds() == 3600
    assert by_slug[hourly.id].active is False
    # Overlap prevention by default: one run at a time, the next one skipped.
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options.collision_strategy is ConcurrencyLimitStrategy.CANCEL_NEW

    paused = jp.pause_schedules(job.id)
    assert [s.active for s in paused] == [False, False]
    assert [s.active for s in deployment_of(job.id).schedules] == [False, False]
    jp.resume_schedules(job.id, daily.id)
    active = {s.slug: s.active for s in deployment_of(job.id).schedules}
    assert active == {daily.id: True, hourly.id: False}
    assert [e.payload.get("changed") for e in jp.list_events(job_id=job.id)][-1] == ["schedules"]

    changed = jp.update_job(job.id, max_concurrent_runs=3, overlap="queue", name="daily report 2")
    assert [s.id for s in changed.schedules] == [daily.id, hourly.id]  # kept as they were
    deployment = deployment_of(job.id)
    assert deployment.global_concurrency_limit.limit == 3
    assert deployment.concurrency_options.collision_strategy is ConcurrencyLimitStrategy.ENQUEUE
    assert "daily report 2" in deployment.description
    jp.update_job(job.id, max_concurrent_runs=None)
    assert deployment_of(job.id).global_concurrency_limit is None

    jp.delete_schedule(job.id, hourly.id)
    assert [s.slug for s in deployment_of(job.id).schedules] == [daily.id]
    assert jp.update_job(job.id, schedules=[]).prefect_deployment is None
    assert deployment_of(job.id) is None


def test_deleting_a_job_deletes_its_deployment(job_runner: None) -> None:
    job = jp.create_job(name="doomed", job_config_json=ORDER, schedules=[{"cron": "*/5 * * * *"}])
    assert deployment_of(job.id) is not None
    jp.delete_job(job.id)
    assert deployment_of(job.id) is None


def test_a_schedule_prefect_cannot_take_writes_nothing(catalog_url: str) -> None:
    run_coro_as_sync(_delete_job_runner())  # no job-runner deployment on this server
    with pytest.raises(jp.ExecutionError, match="has no 'prefect-jobs: run job/job-runner'"):
        jp.create_job(
            name="unschedulable", job_config_json=ORDER, schedules=[{"cron": "0 * * * *"}]
        )
    assert jp.list_jobs().total == 0
    job = jp.create_job(name="plain", job_config_json=ORDER)
    with pytest.raises(jp.ExecutionError):
        jp.schedule_job(job.id, interval_seconds=60)
    with pytest.raises(jp.ExecutionError):
        jp.update_job(job.id, name="renamed", schedules=[{"cron": "0 * * * *"}])
    after = jp.get_job(job.id)
    assert (after.name, after.version, after.schedules) == ("plain", 1, [])


@pytest.mark.parametrize(
    ("schedule", "field", "message"),
    [
        ({"cron": "every morning"}, "schedules[0].cron", "is not a valid cron expression"),
        ({"cron": "0 6 * * *", "timezone": "Mars/Olympus"}, "schedules[0].timezone", "IANA"),
        ({"timezone": "UTC"}, "schedules[0]", "exactly one of `cron` and `intervalSeconds`"),
        ({"intervalSeconds": 0.5}, "schedules[0].intervalSeconds", "greater than or equal to 1"),
        ({"cron": "* * * * *", "when": "now"}, "schedules[0].when", "Extra inputs"),
    ],
)
def test_bad_schedules_name_the_field(
    catalog_url: str, schedule: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(jp.ValidationError) as caught:
        jp.create_job(name="bad", job_config_json=ORDER, schedules=[schedule])
    assert caught.value.field == field
    assert message in caught.value.message
    assert jp.list_jobs().total == 0


def test_sync_puts_back_what_prefect_lost_and_drops_orphans(job_runner: None) -> None:
    kept = jp.create_job(name="kept", job_config_json=ORDER, schedules=[{"cron": "0 1 * * *"}])
    gone = jp.create_job(name="gone", job_config_json=ORDER, schedules=[{"cron": "0 2 * * *"}])

    async def lose_and_orphan() -> None:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(dispatch.job_deployment(kept.id))
            await client.delete_deployment(deployment.id)

    run_coro_as_sync(lose_and_orphan())
    # `gone` is deleted in the catalog while Prefect is left with its deployment.
    from jobs_plugin import catalog

    catalog.delete_job(gone.id, catalog.get_job(gone.id, jp.api.organization_id()).organization_id)
    assert deployment_of(gone.id) is not None

    assert jp.sync_schedules() == [dispatch.job_deployment(kept.id)]
    assert [s.slug for s in deployment_of(kept.id).schedules] == [kept.schedules[0].id]
    assert deployment_of(gone.id) is None


def test_non_blocking_executes_of_a_scheduled_job_go_to_its_deployment(job_runner: None) -> None:
    job = jp.create_job(name="overlap", job_config_json=ORDER, schedules=[{"cron": "0 3 * * *"}])
    run = jp.execute(job.id, wait=False)
    assert run.status.value == "READY"

    async def deployment_of_run() -> Any:
        async with get_client() as client:
            flow_run = await client.read_flow_run(run.prefect_flow_run_id)  # type: ignore[arg-type]
            return await client.read_deployment(flow_run.deployment_id)  # type: ignore[arg-type]

    assert run_coro_as_sync(deployment_of_run()).name == f"job-{job.id}"
    jp.cancel(run.id)


def test_schedules_over_rest(job_runner: None, server_url: str) -> None:
    _, secret = jp.create_api_key()
    with api_client(server_url, secret) as client:
        created = client.post("/jobs", json={"name": "rest", "jobConfigJson": ORDER}).json()
        job_id = created["data"]["id"]
        assert created["data"]["schedules"] == []
        added = client.post(
            f"/jobs/{job_id}/schedules", json={"cron": "30 7 * * 1-5", "timezone": "Asia/Tokyo"}
        )
        assert added.status_code == 201, added.text
        schedule = added.json()["data"]
        assert (schedule["cron"], schedule["timezone"], schedule["active"]) == (
            "30 7 * * 1-5",
            "Asia/Tokyo",
            True,
        )
        paused = client.patch(f"/jobs/{job_id}/schedules/{schedule['id']}", json={"active": False})
        assert paused.json()["data"]["active"] is False
        assert deployment_of(job_id).schedules[0].active is False
        listed = client.get(f"/jobs/{job_id}/schedules").json()["data"]
        assert [s["id"] for s in listed] == [schedule["id"]]
        job = client.get(f"/jobs/{job_id}").json()["data"]
        assert job["prefectDeployment"] == f"prefect-jobs: run job/job-{job_id}"
        assert (job["maxConcurrentRuns"], job["overlap"]) == (1, "skip")

        bad = client.post(f"/jobs/{job_id}/schedules", json={"cron": "61 * * * *"})
        assert bad.status_code == 422
        assert "cron" in bad.text
        missing = client.patch(f"/jobs/{job_id}/schedules/us_sc_nope", json={"active": True})
        assert missing.status_code == 404
        replaced = client.patch(f"/jobs/{job_id}", json={"schedules": [{"intervalSeconds": 60}]})
        assert [s["intervalSeconds"] for s in replaced.json()["data"]["schedules"]] == [60]
        assert client.delete(f"/jobs/{job_id}").status_code == 200
        assert deployment_of(job_id) is None


def test_cli_schedules_a_job(job_runner: None) -> None:
    job = jp.create_job(name="cli", job_config_json=ORDER)
    done = cli("jobs schedule", job.id, "--cron", "0 6 * * *", "--timezone", "Europe/Berlin")
    assert done.exit_code == 0, done.output
    assert f"job-{job.id}" in done.stdout
    [schedule] = jp.list_schedules(job.id)
    assert (schedule.cron, schedule.timezone) == ("0 6 * * *", "Europe/Berlin")
    assert cli("schedules pause", job.id).exit_code == 0
    assert jp.list_schedules(job.id)[0].active is False
    listed = cli("schedules list", job.id, "--json")
    assert [s["active"] for s in json.loads(listed.stdout)] == [False]

    bad = cli("jobs schedule", job.id, "--cron", "0 6 * * *", "--timezone", "Nowhere/City")
    line = error_line(bad, 2)
    assert "timezone" in line and "Nowhere/City" in line
    assert len(jp.list_schedules(job.id)) == 1


def test_unknown_schedule_and_job_are_not_found(job_runner: None) -> None:
    job = jp.create_job(name="lonely", job_config_json=ORDER)
    with pytest.raises(jp.ScheduleNotFound):
        jp.pause_schedules(job.id, "us_sc_nope")
    with pytest.raises(jp.JobNotFound):
        jp.schedule_job("us_jb_nope", cron="* * * * *")
