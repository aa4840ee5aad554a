"""The job endpoints beyond CRUD, over HTTP against the real server: jobs a caller runs itself
(``managed: false``: ack, split, complete, fail), outcome acknowledgement, plans, versions,
optimistic concurrency (``If-Match``/``version``), ``Idempotency-Key`` and forced deletes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import jobs_plugin as jp
from jobs_plugin import engine
from tests.api.conftest import api_client

TERMINAL = {"COMPLETED", "FAILED", "CANCELED"}


@pytest.fixture
def client(server_url: str) -> Iterator[httpx.Client]:
    _, key = jp.create_api_key()
    with api_client(server_url, key) as http:
        yield http
    engine.wait_for_background(timeout=60)


def _create(client: httpx.Client, body: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post("/jobs", json=body, headers=headers)


def _workflow_job(*steps: Any, name: str = "ordered") -> dict[str, Any]:
    return {"name": name, "jobConfigJson": {"workflowExecutionOrder": list(steps) or ["test.noop"]}}


def _topics(job_id: str) -> list[str]:
    return [e.topic for e in jp.list_events(job_id=job_id) if e.run_id]


def _wait_status(client: httpx.Client, job_id: str, wanted: set[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()["data"]
        if job["status"] in wanted:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout} s"
        time.sleep(0.1)


# --------------------------------------------------------------------------- unmanaged jobs


def test_a_job_the_caller_runs_goes_through_ack_split_and_complete(client: httpx.Client) -> None:
    body = {"type": "file", "operation": "extract", "source": "us_fl_x", "managed": False}
    created = _create(client, body)
    assert created.status_code == 201, created.text
    job_id = created.json()["data"]["id"]
    assert client.get(f"/jobs/{job_id}/plan").json()["data"]["plan"] == {"workflows": []}

    executed = client.post(f"/jobs/{job_id}/execute")
    assert executed.status_code == 200, executed.text
    assert client.get(f"/jobs/{job_id}").json()["data"]["status"] == "READY"

    acked = client.post(f"/jobs/{job_id}/ack", json={"info": "reading", "progress": 10})
    assert acked.status_code == 200, acked.text
    job = acked.json()["data"]
    assert (job["status"], job["info"], job["progress"]) == ("EXECUTING", "reading", 10)
    split = client.post(f"/jobs/{job_id}/split", json={"parts": 4})
    assert split.status_code == 200, split.text
    client.post(f"/jobs/{job_id}/ack", json={"progress": 50})
    run = jp.get_run(client.get(f"/jobs/{job_id}").json()["data"]["lastRunId"])
    assert (run.parts, run.processed, run.progress) == (4, 2, 50)
    # progress never goes backwards
    client.post(f"/jobs/{job_id}/ack", json={"progress": 20})
    assert client.get(f"/jobs/{job_id}").json()["data"]["progress"] == 50

    done = client.post(
        f"/jobs/{job_id}/complete", json={"outcome": {"message": "4 sheets read", "next": {}}}
    )
    assert done.status_code == 200, done.text
    job = done.json()["data"]
    assert job["status"] == "COMPLETED" and job["progress"] == 100
    assert job["outcome"]["message"] == "4 sheets read" and job["outcome"]["next"] == {}
    assert job["outcomeAcknowledgedAt"] is None
    assert _topics(job_id) == [
        "job:waiting",
        "job:started",
        "job:updated",
        "job:updated",
        "job:updated",
        "job:completed",
    ]
    run = jp.get_run(job["lastRunId"])
    assert (run.parts, run.processed) == (4, 4)

    acknowledged = client.post(f"/jobs/{job_id}/outcome/ack")
    assert acknowledged.status_code == 200, acknowledged.text
    stamp = acknowledged.json()["data"]["outcomeAcknowledgedAt"]
    assert stamp is not None
    again = client.post(f"/jobs/{job_id}/outcome/ack").json()["data"]["outcomeAcknowledgedAt"]
    assert again == stamp
    assert _topics(job_id)[-1] == "job:outcome-acknowledged"
    # the run has ended: nothing more to report on it
    assert client.post(f"/jobs/{job_id}/complete").status_code == 409
    assert client.post(f"/jobs/{job_id}/split", json={"parts": 2}).status_code == 200  # new run


def test_a_job_the_caller_runs_can_fail_and_be_canceled(client: httpx.Client) -> None:
    body = {"name": "mine", "managed": False}
    job_id = _create(client, body).json()["data"]["id"]
    acked = client.post(f"/jobs/{job_id}/ack")  # no run yet: ack starts one
    assert acked.json()["data"]["status"] == "EXECUTING"
    failed = client.post(
        f"/jobs/{job_id}/fail", json={"outcome": {"message": "bad header"}, "info": "row 1"}
    )
    job = failed.json()["data"]
    assert job["status"] == "FAILED" and job["outcome"]["message"] == "row 1"
    assert _topics(job_id) == ["job:waiting", "job:started", "job:failed"]

    client.post(f"/jobs/{job_id}/execute")
    canceled = client.post(f"/jobs/{job_id}/cancel", json={"info": "not needed"})
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["data"]["status"] == "CANCELED"
    assert canceled.json()["data"]["info"] == "not needed"


def test_managed_jobs_refuse_the_callers_reports(client: httpx.Client) -> None:
    job_id = _create(client, _workflow_job()).json()["data"]["id"]
    for path, body in (
        ("ack", {}),
        ("complete", {}),
        ("fail", {}),
        ("split", {"parts": 3}),
    ):
        response = client.post(f"/jobs/{job_id}/{path}", json=body)
        assert response.status_code == 409, (path, response.text)
        assert "managed" in response.json()["errors"][0]["message"]
    assert client.post(f"/jobs/{job_id}/outcome/ack").status_code == 409  # never ran
    parallel = client.post(f"/jobs/{job_id}/split", json={"parts": 3, "runInParallel": True})
    assert parallel.status_code == 422
    assert parallel.json()["errors"][0]["key"] == "runInParallel"
    assert jp.list_runs(job_id).total == 0


# --------------------------------------------------------------------------- plan, versions


def test_plan_and_versions_and_executing_an_old_version(
    client: httpx.Client, tmp_path: Path
) -> None:
    log = tmp_path / "log.txt"
    first = {"workflowId": "test.record", "parameters": {"path": str(log), "label": "v1"}}
    job_id = _create(client, _workflow_job(first)).json()["data"]["id"]
    second = {"workflowId": "test.record", "parameters": {"path": str(log), "label": "v2"}}
    patched = client.patch(
        f"/jobs/{job_id}", json={"jobConfigJson": {"workflowExecutionOrder": [second, "test.noop"]}}
    )
    assert patched.status_code == 200, patched.text

    plan = client.get(f"/jobs/{job_id}/plan").json()["data"]
    assert plan["job"]["id"] == job_id and plan["job"]["version"] == 2
    assert [w["workflowId"] for w in plan["plan"]["workflows"]] == ["test.record", "test.noop"]
    assert plan["plan"]["workflows"][0]["parameters"]["label"] == "v2"
    old_plan = client.get(f"/jobs/{job_id}/plan", params={"version": 1}).json()["data"]
    assert [w["workflowId"] for w in old_plan["plan"]["workflows"]] == ["test.record"]
    assert client.get(f"/jobs/{job_id}/plan", params={"version": 9}).status_code == 404

    versions = client.get(f"/jobs/{job_id}/versions").json()
    assert [v["version"] for v in versions["data"]] == [1, 2]
    assert versions["pagination"]["totalCount"] == 2

    executed = client.post(f"/jobs/{job_id}/execute", params={"version": 1})
    run_id = executed.headers["X-Run-Id"]
    job = _wait_status(client, job_id, TERMINAL)
    assert job["status"] == "COMPLETED"
    assert jp.get_run(run_id).job_version == 1
    assert [json.loads(line)["label"] for line in log.read_text().splitlines()] == ["v1"]


# --------------------------------------------------------------------------- concurrency


def test_stale_writes_are_409_never_lost(client: httpx.Client) -> None:
    job_id = _create(client, _workflow_job()).json()["data"]["id"]
    fetched = client.get(f"/jobs/{job_id}")
    assert fetched.headers["ETag"] == '"1"'

    ok = client.patch(f"/jobs/{job_id}", json={"name": "a"}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200 and ok.headers["ETag"] == '"2"'
    stale = client.patch(f"/jobs/{job_id}", json={"name": "b"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 409, stale.text
    stale_body = client.patch(f"/jobs/{job_id}", json={"name": "c", "version": 1})
    assert stale_body.status_code == 409
    assert client.get(f"/jobs/{job_id}").json()["data"]["name"] == "a"
    fresh = client.patch(f"/jobs/{job_id}", json={"name": "d", "version": 2})
    assert fresh.status_code == 200 and fresh.json()["data"]["version"] == 3
    bad = client.patch(f"/jobs/{job_id}", json={"name": "e"}, headers={"If-Match": "soon"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["key"] == "If-Match"


def test_concurrent_patches_from_one_version_let_exactly_one_through(
    client: httpx.Client,
) -> None:
    job_id = _create(client, _workflow_job()).json()["data"]["id"]
    codes: list[int] = []
    barrier = threading.Barrier(6)

    def patch(i: int) -> None:
        barrier.wait()
        response = client.patch(
            f"/jobs/{job_id}", json={"name": f"writer {i}"}, headers={"If-Match": '"1"'}
        )
        codes.append(response.status_code)

    threads = [threading.Thread(target=patch, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200, 409, 409, 409, 409, 409]
    assert client.get(f"/jobs/{job_id}").json()["data"]["version"] == 2


def test_idempotency_key_replays_create_and_execute(client: httpx.Client) -> None:
    body = _workflow_job(name="once")
    first = _create(client, body, **{"Idempotency-Key": "create-1"})
    again = _create(client, body, **{"Idempotency-Key": "create-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert jp.list_jobs().total == 1
    other = _create(client, _workflow_job(name="twice"), **{"Idempotency-Key": "create-1"})
    assert other.status_code == 422 and other.json()["errors"][0]["key"] == "Idempotency-Key"
    assert _create(client, body).status_code == 201  # no key: a new job
    assert jp.list_jobs().total == 2

    job_id = first.json()["data"]["id"]
    run_a = client.post(f"/jobs/{job_id}/execute", headers={"Idempotency-Key": "exec-1"})
    run_b = client.post(f"/jobs/{job_id}/execute", headers={"Idempotency-Key": "exec-1"})
    assert run_a.status_code == run_b.status_code == 200
    assert run_a.headers["X-Run-Id"] == run_b.headers["X-Run-Id"]
    _wait_status(client, job_id, TERMINAL)
    assert jp.list_runs(job_id).total == 1
    # a request that failed gives its key back: fixed and sent again, it goes through
    invalid = _create(
        client,
        {"name": "x", "jobConfigJson": {"workflowExecutionOrder": ["no"]}},
        **{"Idempotency-Key": "create-2"},
    )
    assert invalid.status_code == 422
    assert _create(client, body, **{"Idempotency-Key": "create-2"}).status_code == 201


def test_idempotency_keys_belong_to_their_organization(
    client: httpx.Client, server_url: str
) -> None:
    body = {"name": "mine", "managed": False}  # runs no workflow: valid in any organization
    mine = _create(client, body, **{"Idempotency-Key": "shared"})
    _, other_key = jp.create_api_key("other-org")
    with api_client(server_url, other_key) as other:
        theirs = _create(other, body, **{"Idempotency-Key": "shared"})
    assert theirs.status_code == 201
    assert theirs.json()["data"]["id"] != mine.json()["data"]["id"]
    assert "Idempotent-Replayed" not in theirs.headers


# --------------------------------------------------------------------------- delete


def test_delete_of_a_running_job_is_409_unless_forced(
    client: httpx.Client, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    step = {"workflowId": "test.sleep", "parameters": {"seconds": 60, "started_path": str(started)}}
    job_id = _create(client, _workflow_job(step)).json()["data"]["id"]
    run_id = client.post(f"/jobs/{job_id}/execute").headers["X-Run-Id"]
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline, "the workflow did not start"
        time.sleep(0.05)

    refused = client.delete(f"/jobs/{job_id}")
    assert refused.status_code == 409, refused.text
    assert client.get(f"/jobs/{job_id}").status_code == 200

    forced = client.delete(f"/jobs/{job_id}", params={"force": "true"})
    assert forced.status_code == 200, forced.text
    assert client.get(f"/jobs/{job_id}").status_code == 404
    assert jp.get_run(run_id).status.value == "CANCELED"
    topics = [e.topic for e in jp.list_events(job_id=job_id)]
    assert topics[-2:] == ["job:canceled", "job:deleted"]


def test_runs_link_to_the_prefect_ui_when_a_server_has_one(client: httpx.Client) -> None:
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    job_id = _create(client, _workflow_job("test.noop")).json()["data"]["id"]
    run_id = client.post(f"/jobs/{job_id}/execute").headers["X-Run-Id"]
    _wait_status(client, job_id, TERMINAL)
    over_http = client.get(f"/runs/{run_id}").json()["data"]
    assert "prefectUrl" in over_http and "prefectUrl" in over_http["workflowRuns"][0]
    with temporary_settings(updates={PREFECT_UI_URL: "http://127.0.0.1:4200"}):
        run = jp.get_run(run_id)
    assert run.prefect_url == f"http://127.0.0.1:4200/runs/flow-run/{run.prefect_flow_run_id}"
    step = run.workflow_runs[0]
    assert step.prefect_url == f"http://127.0.0.1:4200/runs/flow-run/{step.prefect_flow_run_id}"
