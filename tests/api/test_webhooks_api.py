"""Webhooks end to end: a real receiver on a loopback port, signed deliveries, retries while it
is down, ordering per run, giving up, and replay."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

import jobs_plugin as jp
from jobs_plugin.settings import get_settings
from tests.api.conftest import api_client, free_port


class Receiver:
    """An HTTP endpoint that records what it is sent; it can be stopped, restarted on the same
    port, or told to answer with an error status."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[dict[str, Any]] = []
        self.status = 200
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.status < 300:
                    receiver.received.append({"headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatcher retries fast: 0.2 s doubling to 1 s, 8 attempts, 2 s per attempt."""
    monkeypatch.setenv("PREFECT_JOBS_WEBHOOK_BACKOFF_SECONDS", "0.2")
    monkeypatch.setenv("PREFECT_JOBS_WEBHOOK_BACKOFF_MAX_SECONDS", "1")
    monkeypatch.setenv("PREFECT_JOBS_WEBHOOK_MAX_ATTEMPTS", "8")
    monkeypatch.setenv("PREFECT_JOBS_WEBHOOK_TIMEOUT_SECONDS", "2")
    get_settings.cache_clear()


@pytest.fixture
def client(fast_retries: None, server_url: str) -> Iterator[httpx.Client]:
    """A client of a server started after ``fast_retries`` (fixtures resolve in order)."""
    _, key = jp.create_api_key()
    with api_client(server_url, key) as http:
        yield http


def _wait(condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _job(client: httpx.Client, *steps: Any) -> str:
    body = {"name": "hooked", "jobConfigJson": {"workflowExecutionOrder": list(steps)}}
    response = client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["data"]["id"]
    return job_id


def test_deliveries_are_signed_and_ordered(client: httpx.Client, receiver: Receiver) -> None:
    receiver.start()
    created = client.post("/webhooks", json={"url": receiver.url})
    assert created.status_code == 201, created.text
    hook = created.json()["data"]
    secret = hook["secret"]
    assert secret.startswith("whsec_") and hook["topics"] is None
    assert "secret" not in client.get(f"/webhooks/{hook['id']}").json()["data"]

    job_id = _job(client, {"workflowId": "test.chunks", "parameters": {"count": 3}})
    run = jp.execute(job_id)
    expected = [e for e in jp.list_events(job_id=job_id)]
    _wait(lambda: len(receiver.received) >= len(expected), what="all deliveries")
    time.sleep(0.3)  # nothing more may come

    got = receiver.events()
    assert [e["id"] for e in got] == [e.id for e in expected]
    assert got[-1]["topic"] == "job:completed" and got[-1]["context"]["runId"] == run.id
    for request in receiver.received:
        headers = request["headers"]
        assert jp.verify_signature(secret, headers["X-Prefect-Jobs-Signature"], request["body"])
        assert not jp.verify_signature(
            "whsec_wrong-secret", headers["X-Prefect-Jobs-Signature"], request["body"]
        )
        assert not jp.verify_signature(
            secret, headers["X-Prefect-Jobs-Signature"], request["body"] + b" "
        )
    deliveries = client.get(f"/webhooks/{hook['id']}/deliveries").json()["data"]
    assert {d["status"] for d in deliveries} == {"succeeded"}
    assert all(d["attempts"] == 1 for d in deliveries)


def test_receiver_down_then_back_gets_every_event_once(
    client: httpx.Client, receiver: Receiver
) -> None:
    hook = client.post(
        "/webhooks", json={"url": receiver.url, "topics": ["job:completed", "job:started"]}
    ).json()["data"]
    first, second = _job(client, "test.noop"), _job(client, "test.noop")
    jp.execute(first)
    jp.execute(second)

    def failed_attempts() -> int:
        deliveries = client.get(f"/webhooks/{hook['id']}/deliveries").json()["data"]
        return max((d["attempts"] for d in deliveries), default=0)

    _wait(lambda: failed_attempts() >= 2, what="failed attempts while the receiver is down")
    assert receiver.received == []

    receiver.start()
    _wait(lambda: len(receiver.received) >= 4, what="deliveries after the receiver came back")
    time.sleep(0.5)
    got = receiver.events()
    assert len(got) == 4 and len({e["id"] for e in got}) == 4  # each once
    assert {e["topic"] for e in got} == {"job:started", "job:completed"}  # only those topics
    for job_id in (first, second):
        topics = [e["topic"] for e in got if e["context"]["jobId"] == job_id]
        assert topics == ["job:started", "job:completed"]  # in order within a run
    deliveries = client.get(f"/webhooks/{hook['id']}/deliveries").json()["data"]
    assert {d["status"] for d in deliveries} == {"succeeded"}
    assert max(d["attempts"] for d in deliveries) >= 3  # failed at least twice, then delivered


def test_given_up_delivery_can_be_replayed(client: httpx.Client, receiver: Receiver) -> None:
    receiver.status = 500
    receiver.start()
    hook = client.post("/webhooks", json={"url": receiver.url, "topics": ["job:completed"]})
    hook_id = hook.json()["data"]["id"]
    jp.execute(_job(client, "test.noop"))

    def deliveries() -> list[dict[str, Any]]:
        response = client.get(f"/webhooks/{hook_id}/deliveries")
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    _wait(lambda: deliveries() and deliveries()[0]["status"] == "failed", what="giving up")
    given_up = deliveries()[0]
    assert given_up["attempts"] == 8
    assert given_up["lastStatusCode"] == 500 and "HTTP 500" in given_up["lastError"]

    receiver.status = 200
    replay = client.post(f"/webhooks/{hook_id}/deliveries/{given_up['id']}/retry")
    assert replay.status_code == 200 and replay.json()["data"]["status"] == "pending"
    _wait(lambda: len(receiver.received) == 1, what="the replayed delivery")
    assert receiver.events()[0]["id"] == given_up["eventId"]
    _wait(lambda: deliveries()[0]["status"] == "succeeded", what="the delivery's success")


def test_webhook_crud_and_errors(client: httpx.Client, server_url: str) -> None:
    bad = client.post("/webhooks", json={"url": "ftp://example.invalid/x"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["key"] == "url"
    bad_topic = client.post("/webhooks", json={"url": "http://127.0.0.1:1/x", "topics": ["oops"]})
    assert bad_topic.status_code == 422 and bad_topic.json()["errors"][0]["key"] == "topics"

    hook = client.post(
        "/webhooks", json={"url": "http://127.0.0.1:1/x", "secret": "s" * 20}
    ).json()["data"]
    assert hook["secret"] == "s" * 20
    listed = client.get("/webhooks").json()
    assert [w["id"] for w in listed["data"]] == [hook["id"]]
    changed = client.patch(f"/webhooks/{hook['id']}", json={"active": False, "topics": []})
    assert changed.status_code == 200 and changed.json()["data"]["active"] is False
    assert client.patch(f"/webhooks/{hook['id']}", json={"url": "nope"}).status_code == 422

    _, other_key = jp.create_api_key("webhook-other-org")
    base = str(client.base_url).rstrip("/")
    with api_client(base, other_key) as other:
        assert other.get("/webhooks").json()["data"] == []
        assert other.get(f"/webhooks/{hook['id']}").status_code == 404
        assert other.delete(f"/webhooks/{hook['id']}").status_code == 404
        assert other.get(f"/webhooks/{hook['id']}/deliveries").status_code == 404

    assert client.delete(f"/webhooks/{hook['id']}").json() == {"data": {"success": True}}
    assert client.get(f"/webhooks/{hook['id']}").status_code == 404
    assert client.post(f"/webhooks/{hook['id']}/deliveries/us_dlv_x/retry").status_code == 404
