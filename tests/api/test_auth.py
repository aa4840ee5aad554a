"""API keys and bearer authentication of the REST API, and the tenant isolation they give.

Every ``/v1`` route is checked by iterating over the app's routes, so a new route cannot be
forgotten.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import jobs_plugin as jp
from jobs_plugin import db
from jobs_plugin.cli import app as cli_app
from jobs_plugin.rest import create_app
from tests.api.conftest import api_client

OTHER = "other-org"
# Routes that create something in the caller's own organization: nothing of another to leak.
CREATES = {
    ("POST", "/v1/jobs"),
    ("POST", "/v1/files"),
    ("POST", "/v1/workbooks"),
    ("POST", "/v1/webhooks"),
}
# Streams never end; their isolation is tested in test_events_api.
STREAMS = {("GET", "/v1/events/stream")}


def _v1_routes() -> list[tuple[str, str]]:
    """Every ``/v1`` operation, read from the OpenAPI document (the app's routes are nested)."""
    paths = create_app().openapi()["paths"]
    routes = [
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1/")
        for method in operations
    ]
    assert len(routes) >= 12, routes
    return routes


def test_openapi_documents_the_bearer_scheme() -> None:
    document = create_app().openapi()
    schemes = document["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
    for path, operations in document["paths"].items():
        for operation in operations.values():
            assert operation.get("security"), path


def _assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    errors = response.json()["errors"]
    assert len(errors) == 1 and errors[0]["message"], errors


@pytest.fixture
def anonymous(server_url: str) -> Iterator[httpx.Client]:
    with api_client(server_url, None) as http:
        yield http


@pytest.mark.parametrize(("method", "path"), _v1_routes())
def test_every_route_needs_a_key(anonymous: httpx.Client, method: str, path: str) -> None:
    url = re.sub(r"\{\w+\}", "some-id", path.removeprefix("/v1"))
    _assert_401(anonymous.request(method, url))


def test_a_bad_or_malformed_key_is_401(server_url: str) -> None:
    for key in ("pj_not-a-key", "nonsense"):
        with api_client(server_url, key) as http:
            _assert_401(http.get("/jobs"))
    with httpx.Client(base_url=server_url, headers={"Authorization": "Basic eDp5"}) as http:
        _assert_401(http.get("/jobs"))


def test_a_revoked_key_is_401(server_url: str) -> None:
    key, secret = jp.create_api_key(name="ci")
    assert secret.startswith("pj_") and key.prefix == secret[:8]
    with api_client(server_url, secret) as http:
        assert http.get("/jobs").status_code == 200
        assert jp.revoke_api_key(key.id).revoked_at is not None
        _assert_401(http.get("/jobs"))
    listed = {k.id: k for k in jp.list_api_keys()}
    assert listed[key.id].revoked_at is not None
    with pytest.raises(jp.ApiKeyNotFound):
        jp.revoke_api_key(key.id, organization=OTHER)


def test_a_key_revoked_elsewhere_stops_working_within_the_cache_time(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process revokes the key straight in the catalog: this server, which found it
    active a moment ago, trusts it for at most ``api_key_cache_seconds`` more."""
    from jobs_plugin import catalog
    from jobs_plugin.settings import get_settings

    monkeypatch.setenv("PREFECT_JOBS_API_KEY_CACHE_SECONDS", "0.5")
    get_settings.cache_clear()
    key, secret = jp.create_api_key()
    with api_client(server_url, secret) as http:
        assert http.get("/jobs").status_code == 200
        catalog.revoke_api_key(key.id, jp.api.organization_id())  # not through this process
        revoked_at = time.monotonic()
        while http.get("/jobs").status_code == 200:
            assert time.monotonic() - revoked_at < 0.5 + 0.5, "still trusted after the cache time"
            time.sleep(0.02)
        _assert_401(http.get("/jobs"))
    monkeypatch.setenv("PREFECT_JOBS_API_KEY_CACHE_SECONDS", "0")
    get_settings.cache_clear()
    key, secret = jp.create_api_key()
    with api_client(server_url, secret) as http:
        assert http.get("/jobs").status_code == 200
        catalog.revoke_api_key(key.id, jp.api.organization_id())
        _assert_401(http.get("/jobs"))  # no cache: at once


def test_keys_are_stored_hashed(catalog_url: str) -> None:
    _, secret = jp.create_api_key()
    with db.get_catalog().writer.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM api_key")).mappings().all()
    assert rows and all(secret not in str(dict(row)) for row in rows)


def test_another_organizations_objects_are_404_or_absent(server_url: str) -> None:
    """Organization A (the default, owning the test workflows) has a job that ran; organization
    B's key sees none of it on any route; builtin workflows are visible to both."""
    jp.register_workflow("tests.workflows:noop", id="builtin.noop", builtin=True)
    job = jp.create_job(
        {"name": "a's job", "jobConfigJson": {"workflowExecutionOrder": ["test.noop"]}}
    )
    run = jp.execute(job.id)
    assert run.status.value == "COMPLETED"
    _, key_a = jp.create_api_key()
    _, key_b = jp.create_api_key(OTHER)
    event_id = jp.list_events(run_id=run.id)[0].id
    file = jp.upload_file(b"x\n1\n", name="a.csv")
    workbook = jp.create_workbook(name="w", sheets=[{"name": "s", "fields": []}])
    sheet_id = workbook.sheets[0].id
    hook, _ = jp.create_webhook(url="http://127.0.0.1:9/hook")
    delivery = "us_dlv_nonexistent"
    secrets_of_a = (job.id, run.id, "test.noop", event_id, file.id, workbook.id, sheet_id, hook.id)
    values = {
        "jobId": job.id,
        "runId": run.id,
        "workflowId": "test.noop",
        "eventId": event_id,
        "fileId": file.id,
        "workbookId": workbook.id,
        "sheetId": sheet_id,
        "webhookId": hook.id,
        "deliveryId": delivery,
        "scheduleId": "us_sc_of_a",  # B must not even learn whether A's job has it
    }
    with api_client(server_url, key_a) as a, api_client(server_url, key_b) as b:
        assert a.get(f"/jobs/{job.id}").status_code == 200
        for method, path in _v1_routes():
            if (method, path) in CREATES | STREAMS:
                continue
            url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path.removeprefix("/v1"))
            body = {"name": "x"} if method in ("PATCH", "PUT") else None
            if path == "/v1/jobs/{jobId}/split":
                body = {"parts": 2}
            if path.startswith("/v1/jobs/{jobId}/schedules"):
                body = {"active": False} if method == "PATCH" else {"cron": "0 6 * * *"}
            if path == "/v1/sheets/{sheetId}/records" and method in ("POST", "PUT"):
                body = [{"id": "us_rc_1", "values": {}}] if method == "PUT" else [{}]
            params = {"workbookId": workbook.id} if path == "/v1/sheets" else None
            response = b.request(method, url, json=body, params=params)
            if path == "/v1/sheets":  # a list filtered by A's workbook: 404 for B
                assert response.status_code == 404, (method, path, response.text)
                continue
            if "{" in path:
                assert response.status_code == 404, (method, path, response.text)
            else:
                assert response.status_code == 200, (method, path, response.text)
                assert not any(s in response.text for s in secrets_of_a), (method, path)
        for query in ({"jobId": job.id}, {"runId": run.id}):
            assert b.get("/events", params=query).json()["data"] == []
        assert a.get("/events", params={"runId": run.id}).json()["data"]
        for client in (a, b):
            assert client.get("/workflows/builtin.noop").status_code == 200
            assert "builtin.noop" in {w["id"] for w in client.get("/workflows").json()["data"]}
        assert a.get(f"/jobs/{job.id}").json()["data"]["name"] == "a's job"  # untouched by b


def test_cli_keys_create_prints_a_working_key(server_url: str) -> None:
    result = CliRunner().invoke(cli_app, ["keys", "create", "--org", OTHER, "--name", "ci"])
    assert result.exit_code == 0, result.output
    secret = result.stdout.splitlines()[0]
    assert secret.startswith("pj_")
    assert "not be shown again" in result.stderr and secret not in result.stderr
    with api_client(server_url, secret) as http:
        assert http.get("/jobs").json()["pagination"]["totalCount"] == 0
    listed = CliRunner().invoke(cli_app, ["keys", "list", "--org", OTHER, "--json"])
    assert listed.exit_code == 0, listed.output
    assert secret not in listed.stdout and secret[:8] in listed.stdout
    key_id = re.findall(r"us_key_\w+", listed.stdout)[0]
    revoked = CliRunner().invoke(cli_app, ["keys", "revoke", key_id, "--org", OTHER])
    assert revoked.exit_code == 0, revoked.output
    with api_client(server_url, secret) as http:
        _assert_401(http.get("/jobs"))


def test_migrations_reach_the_api_key_table(any_catalog_url: str) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    catalog = db.get_catalog()
    config = Config()
    config.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    with catalog.writer.connect() as conn:  # back to a catalog as 0001 left it
        config.attributes["connection"] = conn
        command.downgrade(config, "0001")
        conn.commit()
        assert "api_key" not in sa.inspect(conn).get_table_names()
    db.migrate(catalog)  # 0001 -> head
    db.migrate(catalog)  # a second run is harmless
    with catalog.writer.connect() as conn:
        assert "api_key" in sa.inspect(conn).get_table_names()
        query = "SELECT version_num FROM prefect_jobs_alembic_version"
        version = conn.execute(sa.text(query)).scalar()
    assert version == ScriptDirectory.from_config(config).get_current_head()
    _, secret = jp.create_api_key()
    assert jp.api.organization_for_key(secret) == jp.get_settings().default_organization
