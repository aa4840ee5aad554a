"""Flatfile's own typed client (``@flatfile/api`` 1.23.x, from npm) against the real server.

``tests/node/jobs.js`` runs jobs list, create, get, update, execute, cancel, retry and delete
with the client's methods and prints what it got; this test asserts on it. The job it runs is
made here (``test.sleep``, gated by files, so it can be canceled while executing and released
after the retry): the client cannot send our own fields (it strips every key its ``JobConfig``
type does not know, such as ``name`` and ``jobConfigJson``), so it creates a plain Flatfile job
of its own as well, which is never executed.

Needs ``node`` (18+) and ``npm``; ``node_modules`` is installed once into ``tests/node`` with
``npm ci`` and kept. Skips, saying why, when either is missing or the registry is unreachable.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobs_plugin as jp
from jobs_plugin import engine

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
CLIENT_PACKAGE = NODE_DIR / "node_modules" / "@flatfile" / "api" / "package.json"


def _install_client() -> None:
    """``npm ci`` once into tests/node (kept between runs); skip if npm or the registry fail."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run Flatfile's JavaScript client")
    if CLIENT_PACKAGE.exists():
        return
    try:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("npm ci did not finish in 300 s (is the npm registry reachable?)")
    if done.returncode != 0:
        pytest.skip(f"npm ci failed (is the npm registry reachable?): {done.stderr[-800:]}")


@pytest.fixture
def flatfile_run(server_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Run the Node script against the server; yields its parsed output."""
    _install_client()
    started, release = tmp_path / "started", tmp_path / "release"
    step = {
        "workflowId": "test.sleep",
        "parameters": {"seconds": 120, "started_path": str(started), "release_path": str(release)},
    }
    job = jp.create_job(
        name="gated sleep",
        source_provider="flatfile-client-test",
        job_config_json={"workflowExecutionOrder": [step]},
    )
    _, key = jp.create_api_key()
    options = {
        "baseUrl": server_url,
        "token": key,
        "jobId": job.id,
        "startedPath": str(started),
        "releasePath": str(release),
    }
    try:
        output = _run_node("jobs.js", options)
    finally:
        release.write_text("go")  # never leave a run waiting
        engine.wait_for_background(timeout=60)
    output["jobId"] = job.id
    yield output


def _run_node(script: str, options: dict[str, Any]) -> dict[str, Any]:
    """Run one of the scripts in tests/node; its one JSON line of output."""
    done = subprocess.run(
        ["node", script, json.dumps(options)],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines, f"the script printed nothing; stderr:\n{done.stderr}"
    output: dict[str, Any] = json.loads(lines[-1])
    return output


def _route(path: str) -> str:
    """``/v1/jobs/us_jb_x/cancel?a=b`` -> ``/v1/jobs/{jobId}/cancel``."""
    path = path.split("?")[0]
    for noun in ("jobs", "files", "sheets"):
        path = re.sub(rf"/{noun}/[^/?]+", f"/{noun}/{{{noun[:-1]}Id}}", path)
    return path


def _indexless(message: str) -> str:
    return re.sub(r"\[\d+\]", "[i]", message)


def _problems(output: dict[str, Any]) -> list[str]:
    """Every incompatibility the run showed, once each: calls that failed, fields the client
    warned about while parsing (a value that does not fit its types), and what a strict parse
    with the client's serializers rejects, except the documented spelling of ``status`` (our
    upper-case enum, where Flatfile's wire enum is lower-case; the client accepts both)."""
    problems = [
        f"{s['name']} failed: {s.get('error') or s.get('value')}"
        for s in output["steps"]
        if not s["ok"] and s["name"] != "get-deleted"
    ]
    problems += [
        "client warned: " + _indexless(" ".join(w.split()))
        for s in output["steps"]
        for w in s["warnings"]
    ]
    problems += [
        f"{x['method']} {_route(x['path'])}: strict parse: {_indexless(error)}"
        for x in output["exchanges"]
        for error in x.get("strictErrors", [])
        if not (error.split(":")[0].endswith(".status") and "Expected enum" in error)
    ]
    return list(dict.fromkeys(problems))


def test_flatfile_client_drives_the_job_lifecycle(flatfile_run: dict[str, Any]) -> None:
    output = flatfile_run
    problems = _problems(output)
    assert not problems, "Flatfile's client vs our server:\n" + "\n".join(problems)
    steps = {s["name"]: s for s in output["steps"]}
    job_id = output["jobId"]

    before = steps["list-before"]["value"]
    assert [j["id"] for j in before["data"]] == [job_id]
    assert before["pagination"] == {"currentPage": 1, "pageCount": 1, "totalCount": 1}

    created = steps["create"]["value"]["data"]
    assert created["type"] == "file" and created["operation"] == "extract"
    assert created["source"] == "us_fl_0123abcd"
    assert created["config"] == {"driver": "csv"}
    assert created["metadata"] == {"origin": "flatfile-client-test"}
    assert steps["get-created"]["value"]["data"]["id"] == created["id"]

    assert steps["get"]["value"]["data"]["id"] == job_id
    updated = steps["update"]["value"]["data"]
    assert updated["id"] == job_id
    assert updated["metadata"] == {"updatedBy": "flatfile-client-test"}
    listed = steps["list"]["value"]
    assert [j["id"] for j in listed["data"]] == [job_id, created["id"]]
    assert listed["pagination"]["totalCount"] == 2

    assert steps["execute"]["value"] == {"data": {"success": True}}
    assert steps["wait-executing"]["value"]["id"] == job_id
    assert steps["cancel"]["value"]["data"]["id"] == job_id
    assert steps["wait-canceled"]["value"]["status"].lower() == "canceled"
    assert steps["retry"]["value"]["data"]["id"] == job_id
    finished = steps["wait-completed"]["value"]
    assert finished["status"].lower() in {"complete", "completed"}
    assert finished["progress"] == 100
    assert finished["startedAt"] and finished["finishedAt"]

    seen = [s.lower() for s in output["statuses"]]
    assert seen[:3] == ["executing", "canceled", "executing"], seen
    assert seen[-1] in {"complete", "completed"}, seen

    assert steps["delete"]["value"] == {"data": {"success": True}}
    assert steps["delete-created"]["value"] == {"data": {"success": True}}
    gone = steps["get-deleted"]
    assert not gone["ok"] and gone["error"]["statusCode"] == 404, gone


# A CSV as our export writes one (header of field keys, CRLF line ends, minimal quoting), so
# that the bytes must come back identical.
ROUND_TRIP_CSV = (
    b"name,city,note\r\n"
    b"Ada Lovelace,London,\"first, programmer\"\r\n"
    b"Grace Hopper,New York,\"said \"\"it's easier to ask forgiveness\"\"\"\r\n"
    b"Zo\xc3\xab,Z\xc3\xbcrich,\r\n"
)


def test_flatfile_client_uploads_extracts_reads_exports_and_downloads(
    server_url: str, tmp_path: Path
) -> None:
    """files.upload -> extract job -> records.get -> export job -> files.download, all with
    Flatfile's own client: the downloaded file holds the bytes that were uploaded."""
    _install_client()
    source, out = tmp_path / "people.csv", tmp_path / "downloaded.csv"
    source.write_bytes(ROUND_TRIP_CSV)
    _, key = jp.create_api_key()
    options = {"baseUrl": server_url, "token": key, "csvPath": str(source), "outPath": str(out)}
    try:
        output = _run_node("data.js", options)
    finally:
        engine.wait_for_background(timeout=60)
    problems = _problems(output)
    assert not problems, "Flatfile's client vs our server:\n" + "\n".join(problems)
    steps = {s["name"]: s for s in output["steps"]}
    assert list(steps) == [
        "upload", "get-file", "extract", "sheets", "records", "export", "download"
    ], steps
    uploaded = steps["upload"]["value"]["data"]
    assert (uploaded["name"], uploaded["ext"], uploaded["size"]) == (
        "people.csv",
        "csv",
        len(ROUND_TRIP_CSV),
    )
    assert steps["extract"]["value"]["status"] == "COMPLETED"
    values = [{k: v.get("value") for k, v in r["values"].items()} for r in output["records"]]
    assert values[0] == {"name": "Ada Lovelace", "city": "London", "note": "first, programmer"}
    assert values[2]["name"] == "Zoë" and values[2]["city"] == "Zürich"
    assert len(values) == 3
    assert steps["export"]["value"]["status"] == "COMPLETED"
    assert out.read_bytes() == ROUND_TRIP_CSV
