"""Events over HTTP: the list, one event, acknowledgement, and the live SSE stream."""

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
from tests.api.conftest import api_client

TERMINAL_TOPICS = {"job:completed", "job:failed", "job:canceled"}


@pytest.fixture
def client(server_url: str) -> Iterator[httpx.Client]:
    _, key = jp.create_api_key()
    with api_client(server_url, key) as http:
        yield http


def _create(client: httpx.Client, *steps: Any) -> str:
    response = client.post(
        "/jobs", json={"name": "streamed", "jobConfigJson": {"workflowExecutionOrder": list(steps)}}
    )
    assert response.status_code == 201, response.text
    job_id: str = response.json()["data"]["id"]
    return job_id


def read_sse(
    response: httpx.Response, *, until: set[str] | None = None, count: int | None = None
) -> list[dict[str, Any]]:
    """Parse SSE messages until one of the ``until`` topics arrives or ``count`` were read."""
    messages: list[dict[str, Any]] = []
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
            continue
        if "data" in fields:
            message = {"id": fields.get("id"), "event": fields.get("event")}
            message["data"] = json.loads(fields["data"])
            messages.append(message)
            if until and message["event"] in until:
                return messages
            if count is not None and len(messages) >= count:
                return messages
        fields = {}
    return messages


class StreamReader(threading.Thread):
    """Reads a stream in the background so the test can act while it is open."""

    def __init__(self, client: httpx.Client, params: dict[str, Any], **read: Any) -> None:
        super().__init__(daemon=True)
        self.client, self.params, self.read = client, params, read
        self.connected = threading.Event()
        self.messages: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.client.stream("GET", "/events/stream", params=self.params) as response:
                assert response.status_code == 200, response.read()
                assert response.headers["content-type"].startswith("text/event-stream")
                self.connected.set()
                self.messages = read_sse(response, **self.read)
        except BaseException as exc:  # reported by the test thread
            self.error = exc
            self.connected.set()

    def result(self, timeout: float = 90) -> list[dict[str, Any]]:
        self.join(timeout)
        assert not self.is_alive(), "the stream did not deliver the expected events in time"
        if self.error:
            raise self.error
        return self.messages


def _stream(client: httpx.Client, params: dict[str, Any], **read: Any) -> StreamReader:
    reader = StreamReader(client, params, **read)
    reader.start()
    assert reader.connected.wait(30)
    time.sleep(0.2)  # the hub registers the subscriber right after the response starts
    return reader


def test_stream_shows_a_run_in_order(client: httpx.Client) -> None:
    job_id = _create(client, {"workflowId": "test.chunks", "parameters": {"count": 3}})
    reader = _stream(client, {"jobId": job_id}, until=TERMINAL_TOPICS)
    assert client.post(f"/jobs/{job_id}/execute").status_code == 200
    messages = reader.result()

    topics = [m["event"] for m in messages]
    assert topics[0] == "job:waiting"
    assert topics[1] == "job:started"
    assert topics[-1] == "job:completed"
    assert set(topics[2:-1]) == {"job:updated"} and len(topics) >= 4
    cursors = [int(m["id"]) for m in messages]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    final = messages[-1]["data"]
    assert final["topic"] == "job:completed"
    assert final["domain"] == "job"
    assert final["context"]["jobId"] == job_id
    assert final["payload"]["status"] == "COMPLETED"
    assert final["payload"]["progress"] == 100
    assert final["cursor"] == cursors[-1]


def test_stream_resumes_from_last_event_id_exactly_once(client: httpx.Client) -> None:
    job_id = _create(client, {"workflowId": "test.chunks", "parameters": {"count": 2}})
    run = jp.execute(job_id)
    assert run.status is jp.JobStatus.COMPLETED
    history = jp.list_events(job_id=job_id)
    assert len(history) >= 4
    resume_after = history[1].cursor

    with client.stream(
        "GET",
        "/events/stream",
        params={"jobId": job_id},
        headers={"Last-Event-ID": str(resume_after)},
    ) as response:
        replayed = read_sse(response, count=len(history) - 2)
    assert [int(m["id"]) for m in replayed] == [e.cursor for e in history[2:]]

    # `after` does the same, and a topic filter keeps only what was asked for.
    params = {"jobId": job_id, "after": 0, "topic": ["job:completed", "job:waiting"]}
    with client.stream("GET", "/events/stream", params=params) as response:
        filtered = read_sse(response, count=2)
    assert [m["event"] for m in filtered] == ["job:waiting", "job:completed"]


def test_stream_shows_failure_and_cancel(client: httpx.Client, tmp_path: Path) -> None:
    failing = _create(client, {"workflowId": "test.fail", "parameters": {"message": "no data"}})
    reader = _stream(client, {"jobId": failing}, until=TERMINAL_TOPICS)
    client.post(f"/jobs/{failing}/execute")
    messages = reader.result()
    assert messages[-1]["event"] == "job:failed"
    assert "no data" in messages[-1]["data"]["payload"]["outcome"]["message"]

    started = tmp_path / "started"
    slow = _create(
        client,
        {"workflowId": "test.sleep", "parameters": {"seconds": 60, "started_path": str(started)}},
    )
    reader = _stream(client, {"jobId": slow}, until=TERMINAL_TOPICS)
    client.post(f"/jobs/{slow}/execute")
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.post(f"/jobs/{slow}/cancel").status_code == 200
    messages = reader.result()
    assert messages[-1]["event"] == "job:canceled"
    assert messages[-1]["data"]["payload"]["status"] == "CANCELED"
    jp.engine.wait_for_background(60)


def test_stream_is_per_organization(client: httpx.Client, server_url: str) -> None:
    job_id = _create(client, "test.noop")
    _, other_key = jp.create_api_key("other-org")
    jp.register_workflow("tests.workflows:noop", id="other.noop", organization="other-org")
    with api_client(server_url, other_key) as other:
        reader = _stream(other, {"after": 0}, count=1)
        jp.execute(job_id)
        own = _create(other, "other.noop")
        jp.execute(own, organization="other-org")
        messages = reader.result()
    assert messages[0]["data"]["context"]["jobId"] == own


def test_list_get_and_acknowledge_events(client: httpx.Client) -> None:
    job_id = _create(client, "test.noop")
    jp.execute(job_id)
    listed = client.get("/events", params={"jobId": job_id})
    assert listed.status_code == 200
    events = listed.json()["data"]
    topics = [e["topic"] for e in events]
    assert topics[:3] == ["job:created", "job:waiting", "job:started"]
    assert topics[-1] == "job:completed" and "job:updated" in topics
    total = len(events)
    first = events[0]
    assert set(first) >= {"id", "topic", "domain", "context", "payload", "createdAt"}

    got = client.get(f"/events/{first['id']}")
    assert got.status_code == 200 and got.json()["data"]["id"] == first["id"]
    assert got.json()["data"]["acknowledgedAt"] is None

    assert client.post(f"/events/{first['id']}/ack").json() == {"data": {"success": True}}
    acked = client.get(f"/events/{first['id']}").json()["data"]
    assert acked["acknowledgedAt"] is not None
    # As in Flatfile, acknowledged events are left out unless asked for.
    remaining = client.get("/events", params={"jobId": job_id}).json()["data"]
    assert first["id"] not in [e["id"] for e in remaining] and len(remaining) == total - 1
    everything = client.get("/events", params={"jobId": job_id, "includeAcknowledged": True})
    assert len(everything.json()["data"]) == total

    paged = client.get(
        "/events",
        params={"jobId": job_id, "pageSize": 2, "pageNumber": 2, "includeAcknowledged": True},
    ).json()
    assert paged["pagination"] == {
        "currentPage": 2,
        "pageCount": -(-total // 2),
        "totalCount": total,
    }
    assert [e["id"] for e in paged["data"]] == [e["id"] for e in events[2:4]]

    assert (
        client.get("/events", params={"topic": "job:created", "jobId": job_id}).json()["data"] == []
    )  # acknowledged
    assert client.get("/events/us_evt_doesnotexist").status_code == 404
    assert client.post("/events/us_evt_doesnotexist/ack").status_code == 404


@pytest.fixture
def slow_poll(catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server whose event poller would look only every 30 s (fixtures resolve in order)."""
    from jobs_plugin.settings import get_settings

    monkeypatch.setenv("PREFECT_JOBS_STREAM_POLL_SECONDS", "30")
    get_settings.cache_clear()


def test_events_committed_in_the_servers_process_do_not_wait_for_a_poll(
    slow_poll: None, server_url: str
) -> None:
    """Runs the server executes write their events in its process: the stream hears of each
    commit at once instead of at the next poll (30 s here)."""
    _, key = jp.create_api_key()
    with api_client(server_url, key) as client:
        job_id = _create(client, "test.noop")
        reader = _stream(client, {"jobId": job_id}, until=TERMINAL_TOPICS)
        assert client.post(f"/jobs/{job_id}/execute").status_code == 200
        topics = [m["event"] for m in reader.result(timeout=25)]
    assert topics[0] == "job:waiting" and topics[-1] == "job:completed"
