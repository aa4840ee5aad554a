"""REST routes of files, workbooks, sheets and records, over a real uvicorn server: the
shapes Flatfile's client sends and reads, tenant isolation, and an extract job end to end."""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI

import jobs_plugin as jp
from jobs_plugin import engine
from jobs_plugin.data import store
from jobs_plugin.rest import create_app
from jobs_plugin.rest.routes import files, sheets, workbooks
from tests.api.conftest import api_client, free_port

OTHER = "other-org"


def _app() -> FastAPI:
    """The app, with the data routes added when ``create_app`` does not have them yet."""
    app = create_app()
    if "/v1/files" not in {getattr(r, "path", "") for r in app.routes}:
        v1 = APIRouter(prefix="/v1")
        for module in (files, workbooks, sheets):
            v1.include_router(module.router)
        app.include_router(v1)
    return app


@pytest.fixture
def data_url(catalog_url: str) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=30)
    store.dispose_all()


@pytest.fixture
def client(data_url: str) -> Iterator[httpx.Client]:
    _, key = jp.create_api_key()
    with api_client(data_url, key) as http:
        yield http


CONTACTS = {
    "name": "Contacts",
    "sheets": [
        {
            "name": "People",
            "slug": "people",
            "fields": [
                {"key": "email", "type": "string", "constraints": [{"type": "required"}]},
                {"key": "age", "type": "number", "label": "Age"},
            ],
        }
    ],
}


def test_file_upload_list_get_download_delete(client: httpx.Client) -> None:
    content = b"a,b\n1,2\n"
    response = client.post(
        "/files",
        files={"file": ("small.csv", content, "text/csv")},
        data={"spaceId": "us_sp_1", "environmentId": "us_env_1", "mode": "import"},
    )
    assert response.status_code == 201, response.text
    file = response.json()["data"]
    assert {k: file[k] for k in ("name", "ext", "mimetype", "size", "status", "mode")} == {
        "name": "small.csv",
        "ext": "csv",
        "mimetype": "text/csv",
        "size": len(content),
        "status": "complete",
        "mode": "import",
    }
    assert file["spaceId"] == "us_sp_1" and file["environmentId"] == "us_env_1"
    assert file["id"].startswith("us_fl_") and "createdAt" in file and "bytesReceived" in file
    listed = client.get("/files").json()
    assert [f["id"] for f in listed["data"]] == [file["id"]]
    assert listed["pagination"] == {"currentPage": 1, "pageCount": 1, "totalCount": 1}
    assert client.get(f"/files/{file['id']}").json()["data"]["id"] == file["id"]
    download = client.get(f"/files/{file['id']}/download")
    assert download.status_code == 200 and download.content == content
    assert client.delete(f"/files/{file['id']}").json() == {"data": {"success": True}}
    assert client.get(f"/files/{file['id']}").status_code == 404
    missing = client.get(f"/files/{file['id']}/download")
    assert missing.status_code == 404 and missing.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    ("form", "name", "field"),
    [
        ({"mode": "sideways"}, "a.csv", "mode"),
        ({"spaceId": "s" * 61}, "a.csv", "spaceId"),
        ({"environmentId": "e" * 61}, "a.csv", "environmentId"),
        ({}, "n" * 501 + ".csv", "name"),
    ],
)
def test_file_fields_out_of_bounds_are_refused(
    client: httpx.Client, form: dict[str, str], name: str, field: str
) -> None:
    """Found by the fuzz test: these were stored, then every read of the file failed (500)."""
    response = client.post("/files", files={"file": (name, b"a\n1\n", "text/csv")}, data=form)
    assert response.status_code in (400, 422), response.text
    assert field in response.text
    assert client.get("/files").json()["data"] == []


def test_a_long_suffix_is_no_extension(client: httpx.Client) -> None:
    response = client.post("/files", files={"file": ("a." + "x" * 30, b"1", "text/plain")})
    assert response.status_code == 201, response.text
    assert response.json()["data"]["ext"] == ""
    assert client.get("/files").status_code == 200


def test_workbooks_sheets_and_records(client: httpx.Client) -> None:
    created = client.post("/workbooks", json=CONTACTS)
    assert created.status_code == 201, created.text
    workbook = created.json()["data"]
    assert workbook["name"] == "Contacts" and workbook["id"].startswith("us_wb_")
    [sheet] = workbook["sheets"]
    assert sheet["slug"] == "people" and sheet["workbookId"] == workbook["id"]
    assert [f["key"] for f in sheet["config"]["fields"]] == ["email", "age"]
    listed = client.get("/sheets", params={"workbookId": workbook["id"]}).json()
    assert [s["id"] for s in listed["data"]] == [sheet["id"]]
    records_url = f"/sheets/{sheet['id']}/records"

    inserted = client.post(
        records_url,
        json=[
            {"email": {"value": "a@x.io"}, "age": {"value": "41"}},
            {"email": {"value": ""}, "age": {"value": "old"}},
            {"email": {"value": "c@x.io"}, "age": {"value": 7}},
        ],
    )
    assert inserted.status_code == 200, inserted.text
    records = inserted.json()["data"]["records"]
    assert [r["valid"] for r in records] == [True, False, True]
    assert records[0]["values"]["age"] == {"value": 41, "valid": True, "messages": []}
    assert records[1]["values"]["age"]["valid"] is False
    assert records[1]["values"]["email"]["messages"] == [
        {"type": "error", "message": "is required"}
    ]

    page = client.get(records_url, params={"includeCounts": "true"}).json()["data"]
    assert page["counts"] == {"total": 3, "valid": 2, "error": 1}
    errors = client.get(records_url, params={"filter": "error"}).json()["data"]["records"]
    assert [r["id"] for r in errors] == [records[1]["id"]]
    found = client.get(records_url, params={"searchValue": "C@X", "searchField": "email"})
    assert [r["id"] for r in found.json()["data"]["records"]] == [records[2]["id"]]
    by_age = client.get(records_url, params={"sortField": "age", "sortDirection": "desc"})
    assert [r["values"]["age"]["value"] for r in by_age.json()["data"]["records"]][:2] == [41, 7]
    paged = client.get(records_url, params={"pageSize": 2, "pageNumber": 2, "fields": ["email"]})
    assert [list(r["values"]) for r in paged.json()["data"]["records"]] == [["email"]]
    by_ids = client.get(records_url, params={"ids": [records[0]["id"], records[2]["id"]]})
    assert len(by_ids.json()["data"]["records"]) == 2

    updated = client.put(
        records_url,
        json=[
            {"id": records[1]["id"], "values": {"email": {"value": "b@x.io"}, "age": {"value": 3}}}
        ],
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["data"]["records"][0]["valid"] is True
    counts = client.get(f"/sheets/{sheet['id']}").json()["data"]["recordCounts"]
    assert counts == {"total": 3, "valid": 3, "error": 0}

    csv_text = client.get(f"/sheets/{sheet['id']}/download").text
    assert list(csv.reader(io.StringIO(csv_text))) == [
        ["email", "age"],
        ["a@x.io", "41"],
        ["b@x.io", "3"],
        ["c@x.io", "7"],
    ]
    deleted = client.delete(records_url, params={"ids": [records[0]["id"]]})
    assert deleted.json() == {"data": {"success": True}}
    assert len(client.get(records_url).json()["data"]["records"]) == 2

    patched = client.patch(f"/workbooks/{workbook['id']}", json={"name": "Renamed"})
    assert patched.json()["data"]["name"] == "Renamed"
    assert client.get("/workbooks").json()["pagination"]["totalCount"] == 1
    assert client.delete(f"/workbooks/{workbook['id']}").json() == {"data": {"success": True}}
    assert client.get(f"/sheets/{sheet['id']}").status_code == 404


def test_bad_input_names_the_field(client: httpx.Client) -> None:
    bad = client.post("/workbooks", json={"sheets": []})
    assert bad.status_code == 422 and bad.json()["errors"][0]["key"] == "name"
    workbook = client.post("/workbooks", json=CONTACTS).json()["data"]
    records_url = f"/sheets/{workbook['sheets'][0]['id']}/records"
    unknown = client.post(records_url, json=[{"nope": {"value": 1}}])
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["key"] == "[0].nope"
    assert client.post(records_url, json={"not": "a list"}).status_code == 422
    assert client.get(records_url, params={"q": "age > 3"}).status_code == 422
    gone = client.put(records_url, json=[{"id": "us_rc_000000000zzz", "values": {}}])
    assert gone.status_code == 404


def test_another_organization_sees_nothing(data_url: str, client: httpx.Client) -> None:
    workbook = client.post("/workbooks", json=CONTACTS).json()["data"]
    sheet_id = workbook["sheets"][0]["id"]
    file = client.post("/files", files={"file": ("a.csv", b"x\n1\n")}).json()["data"]
    _, other_key = jp.create_api_key(OTHER)
    with api_client(data_url, other_key) as b, api_client(data_url, None) as anonymous:
        assert anonymous.get("/files").status_code == 401
        assert anonymous.post("/files", files={"file": ("a.csv", b"x")}).status_code == 401
        for method, url in [
            ("GET", f"/files/{file['id']}"),
            ("GET", f"/files/{file['id']}/download"),
            ("DELETE", f"/files/{file['id']}"),
            ("GET", f"/workbooks/{workbook['id']}"),
            ("PATCH", f"/workbooks/{workbook['id']}"),
            ("DELETE", f"/workbooks/{workbook['id']}"),
            ("GET", f"/sheets/{sheet_id}"),
            ("GET", f"/sheets/{sheet_id}/records"),
            ("POST", f"/sheets/{sheet_id}/records"),
            ("PUT", f"/sheets/{sheet_id}/records"),
            ("DELETE", f"/sheets/{sheet_id}/records"),
            ("GET", f"/sheets/{sheet_id}/download"),
        ]:
            body = {"name": "x"} if method in ("PATCH", "PUT") else None
            response = b.request(method, url, json=body)
            assert response.status_code == 404, (method, url, response.text)
        assert b.get("/sheets", params={"workbookId": workbook["id"]}).status_code == 404
        assert b.get("/files").json()["data"] == []
        assert b.get("/workbooks").json()["data"] == []
    assert client.get(f"/workbooks/{workbook['id']}").status_code == 200


def test_extract_job_over_rest(client: httpx.Client) -> None:
    file = client.post("/files", files={"file": ("n.csv", b"n,word\n1,one\n2,two\n")}).json()
    job = client.post(
        "/jobs",
        json={
            "name": "extract n.csv",
            "type": "file",
            "operation": "extract",
            "source": file["data"]["id"],
            "trigger": "manual",
        },
    )
    assert job.status_code == 201, job.text
    job_id = job.json()["data"]["id"]
    assert client.post(f"/jobs/{job_id}/execute").status_code == 200
    engine.wait_for_background(60)
    done = client.get(f"/jobs/{job_id}").json()["data"]
    assert done["status"] == "COMPLETED", done
    workbook_id = done["outcome"]["workbookId"]
    [sheet] = client.get("/sheets", params={"workbookId": workbook_id}).json()["data"]
    records = client.get(f"/sheets/{sheet['id']}/records").json()["data"]["records"]
    assert [r["values"]["word"]["value"] for r in records] == ["one", "two"]
