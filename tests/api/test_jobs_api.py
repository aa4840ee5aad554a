"""The REST API end to end: a real uvicorn server on a loopback port, driven with httpx."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import jobs_plugin as jp
from tests.api.conftest import api_client, free_port

TERMINAL = {"COMPLETED", "FAILED", "CANCELED"}


@pytest.fixture
def client(server_url: str) -> Iterator[httpx.Client]:
    """An httpx client with an API key of the default organization."""
    _, key = jp.create_api_key()
    with api_client(server_url, key) as http:
        yield http


def _job_body(name: str = "nightly", *steps: str) -> dict[str, Any]:
    return {
        "name": name,
        "sourceProvider": "pos",
        "jobConfigJson": {"workflowExecutionOrder": list(steps) or ["test.noop"]},
    }


def _wait_for_run(client: httpx.Client, run_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/runs/{run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()["data"]
        if run["status"] in TERMINAL:
            return run
        assert time.monotonic() < deadline, f"run still {run['status']} after {timeout} s"
        time.sleep(0.2)


def test_job_lifecycle_over_http(client: httpx.Client) -> None:
    created = client.post("/jobs", json=_job_body("nightly", "test.noop", "test.noop"))
    assert created.status_code == 201, created.text
    job = created.json()["data"]
    job_id = job["id"]
    assert job["name"] == "nightly"
    assert job["sourceProvider"] == "pos"
    assert job["status"] == "READY"
    assert job["version"] == 1
    assert job["jobConfigJson"] == {"workflowExecutionOrder": ["test.noop", "test.noop"]}
    assert job["progress"] is None and job["startedAt"] is None

    fetched = client.get(f"/jobs/{job_id}")
    assert fetched.status_code == 200
    assert fetched.json()["data"]["id"] == job_id

    client.post("/jobs", json={**_job_body("other"), "sourceProvider": "crm"})
    listed = client.get("/jobs", params={"pageSize": 1, "pageNumber": 1, "sortDirection": "asc"})
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert [j["id"] for j in body["data"]] == [job_id]
    assert body["pagination"] == {"currentPage": 1, "pageCount": 2, "totalCount": 2}
    filtered = client.get("/jobs", params={"sourceProvider": "pos"}).json()
    assert [j["id"] for j in filtered["data"]] == [job_id]

    patched = client.patch(f"/jobs/{job_id}", json={"name": "nightly v2"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["data"]["name"] == "nightly v2"
    assert patched.json()["data"]["version"] == 2

    executed = client.post(f"/jobs/{job_id}/execute")
    assert executed.status_code == 200, executed.text
    assert executed.json() == {"data": {"success": True}}
    run_id = executed.headers["X-Run-Id"]
    run = _wait_for_run(client, run_id)
    assert run["status"] == "COMPLETED", run
    assert run["jobId"] == job_id
    assert [w["workflowId"] for w in run["workflowRuns"]] == ["test.noop", "test.noop"]
    assert all(w["status"] == "COMPLETED" for w in run["workflowRuns"])

    after = client.get(f"/jobs/{job_id}").json()["data"]
    assert after["status"] == "COMPLETED"
    assert after["lastRunId"] == run_id
    assert after["progress"] == 100
    assert after["startedAt"] is not None and after["finishedAt"] is not None

    runs = client.get(f"/jobs/{job_id}/runs").json()
    assert [r["id"] for r in runs["data"]] == [run_id]
    assert runs["pagination"]["totalCount"] == 1

    events = client.get("/events", params={"runId": run_id}).json()["data"]
    topics = [e["topic"] for e in events]
    assert topics[0] == "job:waiting", topics
    assert topics[1] == "job:started", topics
    assert topics[-1] == "job:completed", topics
    assert set(topics[2:-1]) == {"job:updated"}, topics
    cursors = [e["cursor"] for e in events]
    assert cursors == sorted(cursors)
    resumed = client.get("/events", params={"runId": run_id, "after": cursors[1]}).json()["data"]
    assert [e["cursor"] for e in resumed] == cursors[2:]

    deleted = client.delete(f"/jobs/{job_id}")
    assert deleted.status_code == 200
    assert deleted.json() == {"data": {"success": True}}
    gone = client.get(f"/jobs/{job_id}")
    assert gone.status_code == 404
    assert gone.json()["errors"][0]["message"]


def test_unknown_workflow_is_422_naming_the_step(client: httpx.Client) -> None:
    response = client.post("/jobs", json=_job_body("bad", "test.noop", "no.such.workflow"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["key"] == "jobConfigJson.workflowExecutionOrder[1]"
    response = client.post("/jobs", json=_job_body("bad", "no.such.workflow"))
    assert response.json()["errors"][0]["key"] == "jobConfigJson.workflowExecutionOrder[0]"
    assert client.get("/jobs").json()["pagination"]["totalCount"] == 0


def test_malformed_bodies_are_422(client: httpx.Client) -> None:
    missing_name = client.post("/jobs", json={"jobConfigJson": {"workflowExecutionOrder": []}})
    assert missing_name.status_code == 422
    assert missing_name.json()["errors"][0]["key"] == "name"
    not_json = client.post(
        "/jobs", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 422
    assert not_json.json()["errors"][0]["key"] == "body"
    bad_page = client.get("/jobs", params={"pageSize": 0})
    assert bad_page.status_code == 422
    assert bad_page.json()["errors"][0]["key"] == "pageSize"
    bad_status = client.get("/jobs", params={"status": "sleeping"})
    assert bad_status.status_code == 422
    assert bad_status.json()["errors"][0]["key"] == "status"


def test_unknown_ids_are_404(client: httpx.Client) -> None:
    for path in ("/jobs/nope", "/runs/nope", "/workflows/nope", "/jobs/nope/runs"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "nope" in response.json()["errors"][0]["message"]
    assert client.patch("/jobs/nope", json={"name": "x"}).status_code == 404
    assert client.delete("/jobs/nope").status_code == 404
    assert client.post("/jobs/nope/execute").status_code == 404


def test_cancel_and_retry_without_a_live_run_are_409(client: httpx.Client) -> None:
    job_id = client.post("/jobs", json=_job_body()).json()["data"]["id"]
    never_ran = client.post(f"/jobs/{job_id}/cancel")
    assert never_ran.status_code == 409
    assert never_ran.json()["errors"][0]["message"]

    run_id = client.post(f"/jobs/{job_id}/execute").headers["X-Run-Id"]
    assert _wait_for_run(client, run_id)["status"] == "COMPLETED"
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 409
    assert client.post(f"/jobs/{job_id}/retry").status_code == 409


def test_failed_run_is_retried(client: httpx.Client) -> None:
    job_id = client.post("/jobs", json=_job_body("fails", "test.fail")).json()["data"]["id"]
    run_id = client.post(f"/jobs/{job_id}/execute").headers["X-Run-Id"]
    assert _wait_for_run(client, run_id)["status"] == "FAILED"
    retried = client.post(f"/jobs/{job_id}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["data"]["id"] == job_id
    second = retried.headers["X-Run-Id"]
    assert second != run_id
    assert _wait_for_run(client, second)["status"] == "FAILED"


def test_workflows_are_listed(client: httpx.Client) -> None:
    body = client.get("/workflows").json()
    ids = {w["id"] for w in body["data"]}
    assert {"test.noop", "test.fail"} <= ids
    assert body["pagination"]["totalCount"] == len(body["data"])
    one = client.get("/workflows/test.noop").json()["data"]
    assert one["id"] == "test.noop"
    assert "entrypoint" in one


def test_cli_api_command_serves_the_api(catalog_url: str) -> None:
    port = free_port()
    command = [str(Path(sys.executable).parent / "prefect-jobs"), "api", "--port", str(port)]
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8"
    )
    try:
        assert server.stdout is not None
        announced = server.stdout.readline()  # the first start prints a first API key, once
        assert "first API key for organization 'default': pj_" in announced, announced
        key = announced.split(": ", 1)[1].split()[0]
        auth = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                url = f"http://127.0.0.1:{port}/v1/workflows"
                response = httpx.get(url, headers=auth, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "prefect-jobs api did not answer in 60 s"
                time.sleep(0.2)
        assert response.status_code == 200
        assert "test.noop" in {w["id"] for w in response.json()["data"]}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_flatfile_shaped_create_needs_no_name_and_reads_back_complete(client: httpx.Client) -> None:
    """Flatfile's clients send no ``name``; every job reads back with the fields Flatfile's
    ``Job`` requires (``createdBy``, ``type``, ``operation``, ``source``), never null."""
    noname = client.post("/jobs", json={"type": "sheet", "operation": "delete", "source": "s1"})
    assert noname.status_code == 201
    assert noname.json()["data"]["name"] == "delete sheet s1"
    workflow_job = client.post("/jobs", json=_job_body()).json()["data"]
    assert workflow_job["type"] == "space"
    assert workflow_job["operation"] == "workflows"
    assert workflow_job["source"] == workflow_job["organizationId"]
    assert workflow_job["createdBy"].startswith("us_key_")
    assert workflow_job["createdBy"] in {k.id for k in jp.list_api_keys()}
    listed = client.get("/jobs", params={"type": "space", "operation": "workflows"}).json()
    assert [j["id"] for j in listed["data"]] == [workflow_job["id"]]
    assert client.get("/jobs", params={"type": "file"}).json()["data"] == []
    python_job = jp.create_job(
        name="local", job_config_json={"workflowExecutionOrder": ["test.noop"]}
    )
    assert python_job.created_by and python_job.created_by.startswith("local")


def test_patch_cannot_clear_required_fields(client: httpx.Client) -> None:
    job_id = client.post("/jobs", json=_job_body()).json()["data"]["id"]
    for field in ("name", "trigger", "managed", "jobConfigJson"):
        response = client.patch(f"/jobs/{job_id}", json={field: None})
        assert response.status_code == 422, (field, response.text)
        assert response.json()["errors"][0] == {"key": field, "message": "must not be null"}
    assert client.get(f"/jobs/{job_id}").json()["data"]["version"] == 1


def test_page_numbers_past_the_limit_are_422_not_an_overflow(client: httpx.Client) -> None:
    for path in ("/jobs", "/events", "/webhooks/x/deliveries"):
        response = client.get(path, params={"pageNumber": 10**30})
        assert response.status_code == 422, (path, response.text)
        assert response.json()["errors"][0]["key"] == "pageNumber"
    with pytest.raises(jp.ValidationError) as caught:
        jp.list_jobs(page_number=10**12)
    assert caught.value.field == "pageNumber"


def test_openapi_is_served_at_the_root_and_under_v1(server_url: str) -> None:
    root = server_url.removesuffix("/v1")
    at_root = httpx.get(f"{root}/openapi.json")
    assert at_root.status_code == 200
    assert at_root.json() == httpx.get(f"{server_url}/openapi.json").json()
    paths = at_root.json()["paths"]
    for path in ("/v1/jobs/{jobId}/ack", "/v1/jobs/{jobId}/plan", "/v1/webhooks"):
        assert path in paths, path
    assert "Idempotency-Key" in str(paths["/v1/jobs"]["post"]["parameters"])
    for docs in (f"{root}/docs", f"{server_url}/docs"):
        page = httpx.get(docs)
        assert page.status_code == 200 and "swagger" in page.text.lower(), docs


def test_flatfiles_list_filters_source_file_and_workbook(client: httpx.Client) -> None:
    def make(**fields: Any) -> str:
        body = {"managed": False, **fields}
        response = client.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        job_id: str = response.json()["data"]["id"]
        return job_id

    extract = make(type="file", operation="extract", source="us_fl_1", destination="us_wb_1")
    export = make(type="workbook", operation="export", source="us_wb_1")
    other = make(type="workbook", operation="export", source="us_wb_2")

    def ids(**params: str) -> set[str]:
        return {j["id"] for j in client.get("/jobs", params=params).json()["data"]}

    assert ids(source="us_fl_1") == ids(fileId="us_fl_1") == {extract}
    assert ids(workbookId="us_wb_1") == {extract, export}
    assert ids(workbookId="us_wb_2") == {other}
    assert ids(spaceId="us_sp_x", environmentId="us_env_x") == {extract, export, other}
    clash = client.get("/jobs", params={"source": "a", "fileId": "b"})
    assert clash.status_code == 422 and clash.json()["errors"][0]["key"] == "fileId"
