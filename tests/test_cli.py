"""The ``prefect-jobs`` command line, end to end: a real catalog, the session's Prefect server.

``cli("jobs create --name x", extra...)``: the command is split like a shell would; ``extra``
arguments (JSON, paths) are appended as they are.
"""

from __future__ import annotations

import json
import shlex
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import jobs_plugin as jp
from jobs_plugin import engine
from jobs_plugin.cli import app

runner = CliRunner()


def cli(command: str, *extra: str, input: str | None = None) -> Result:
    return runner.invoke(app, [*shlex.split(command), *extra], input=input)


def ok(command: str, *extra: str, input: str | None = None) -> Result:
    result = cli(command, *extra, input=input)
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}"
    return result


def as_json(command: str, *extra: str) -> Any:
    return json.loads(ok(command, *extra, "--json").stdout)


def first_line(result: Result) -> str:
    return result.stdout.splitlines()[0]


def error_line(result: Result, exit_code: int) -> str:
    """The command failed with ``exit_code`` and said why in exactly one ``error:`` line."""
    assert result.exit_code == exit_code, f"exit {result.exit_code}\n{result.output}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def step(workflow_id: str, **parameters: Any) -> str:
    return json.dumps({"workflowId": workflow_id, "parameters": parameters})


def create(command: str, *extra: str) -> str:
    """Create a job; its id is the first line."""
    return first_line(ok(f"jobs create {command}", *extra))


# --------------------------------------------------------------------------- jobs


def test_create_from_options_then_get(catalog_url: str) -> None:
    job_id = create(
        "--name 'from options' --source-provider acme -w test.noop -w test.chunks --config",
        '{"retention": 3}',
    )
    assert job_id.startswith("us_jb_")
    job = as_json(f"jobs get {job_id}")
    assert job["id"] == job_id
    assert job["name"] == "from options"
    assert job["sourceProvider"] == "acme"
    assert job["config"] == {"retention": 3}
    assert job["jobConfigJson"]["workflowExecutionOrder"] == ["test.noop", "test.chunks"]
    assert (job["status"], job["version"], job["trigger"]) == ("READY", 1, "manual")

    table = ok(f"jobs get {job_id}").stdout
    assert job_id in table and "from options" in table and "test.chunks" in table


def test_create_from_a_file_or_stdin_with_options_overriding(
    catalog_url: str, tmp_path: Path
) -> None:
    spec = {
        "name": "from file",
        "type": "file",
        "operation": "extract",
        "jobConfigJson": {
            "workflowExecutionOrder": [
                {
                    "workflowId": "test.record",
                    "parameters": {"path": "/tmp/x", "label": "a"},
                    "retries": 1,
                }
            ]
        },
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(spec))
    job = as_json(f"jobs create --file {path} --name renamed")
    assert job["name"] == "renamed"
    assert (job["type"], job["operation"]) == ("file", "extract")
    assert job["jobConfigJson"] == spec["jobConfigJson"]
    assert '{"retries": 1}' in ok(f"jobs get {job['id']}").stdout

    piped = json.loads(ok("jobs create -f - --json", input=json.dumps(spec)).stdout)
    assert piped["name"] == "from file" and piped["id"] != job["id"]


def test_list_pages_and_filters(catalog_url: str) -> None:
    for n in range(3):
        create(f"--name 'paged {n}' -w test.noop --source-provider p{n % 2}")
    first = ok("jobs list --page-size 2").stdout
    assert "page 1 of 2 · 3 in total" in first
    assert first.count("paged ") == 2
    second = as_json("jobs list --page-size 2 --page 2")
    assert (second["total"], second["pageNumber"], len(second["items"])) == (3, 2, 1)
    assert [j["name"] for j in as_json("jobs list --source-provider p1")["items"]] == ["paged 1"]
    assert as_json("jobs list --status completed")["total"] == 0


def test_update_makes_a_new_version_and_keeps_the_rest_of_the_config(
    catalog_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "job.json"
    config = {"workflowExecutionOrder": ["test.noop"], "note": "keep"}
    path.write_text(json.dumps({"name": "v1", "jobConfigJson": config}))
    job_id = create(f"--file {path}")

    job = as_json(f"jobs update {job_id} --name v2 --expected-version 1")
    assert (job["name"], job["version"]) == ("v2", 2)
    job = as_json(f"jobs update {job_id} -w test.chunks -w test.noop")
    assert job["version"] == 3
    assert job["jobConfigJson"] == {
        "workflowExecutionOrder": ["test.chunks", "test.noop"],
        "note": "keep",
    }

    assert "version" in error_line(cli(f"jobs update {job_id} --name v4 --expected-version 1"), 1)
    assert "nothing to change" in error_line(cli(f"jobs update {job_id}"), 2)
    assert [v["version"] for v in as_json(f"jobs versions {job_id}")] == [1, 2, 3]
    assert "test.chunks, test.noop" in ok(f"jobs versions {job_id}").stdout
    plan = as_json(f"jobs plan {job_id}")
    assert [(s["position"], s["workflowId"]) for s in plan] == [
        (0, "test.chunks"),
        (1, "test.noop"),
    ]
    assert "test.chunks" in ok(f"jobs plan {job_id}").stdout


def test_delete(catalog_url: str) -> None:
    job_id = create("--name doomed -w test.noop")
    assert ok(f"jobs delete {job_id}").stdout.strip() == f"deleted job {job_id}"
    assert job_id in error_line(cli(f"jobs get {job_id}"), 1)
    assert as_json("jobs list")["total"] == 0


# --------------------------------------------------------------------------- runs


def test_execute_runs_a_two_step_job_to_completion(catalog_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    job_id = create(
        "--name two-steps",
        "--step",
        step("test.record", path=str(out), label="first"),
        "--step",
        step("test.record", path=str(out), label="second"),
    )
    result = ok(f"jobs execute {job_id}")
    run_id = first_line(result)
    assert run_id.startswith("us_jr_")
    assert "COMPLETED" in result.stdout and "2/2" in result.stdout
    labels = [json.loads(line)["label"] for line in out.read_text().splitlines()]
    assert labels == ["first", "second"]

    run = as_json(f"runs get {run_id}")
    assert (run["status"], run["jobId"], run["progress"]) == ("COMPLETED", job_id, 100)
    steps = run["workflowRuns"]
    assert [(s["position"], s["workflowId"], s["status"]) for s in steps] == [
        (0, "test.record", "COMPLETED"),
        (1, "test.record", "COMPLETED"),
    ]
    table = ok(f"runs get {run_id}").stdout
    assert "workflow runs" in table and run["prefectFlowRunId"] in table
    assert all(s["prefectFlowRunId"] in table for s in steps)

    assert [r["id"] for r in as_json(f"runs list --job {job_id}")["items"]] == [run_id]
    assert run_id in ok("runs list").stdout
    assert as_json("runs list --status FAILED")["total"] == 0


def test_events_list_filters_and_pages(catalog_url: str) -> None:
    job_id = create("--name evented -w test.noop")
    run_id = first_line(ok(f"jobs execute {job_id} --no-wait"))
    topics = [e["topic"] for e in as_json(f"events list --run {run_id}")]
    # job:updated as the workflow starts and as it completes
    assert topics == ["job:waiting", "job:started", "job:updated", "job:updated", "job:completed"]
    assert [e["runId"] for e in as_json(f"events list --job {job_id} --topic job:completed")] == [
        run_id
    ]
    (first,) = as_json(f"events list --run {run_id} --limit 1")
    assert f"more: --after {first['cursor']}" in ok(f"events list --run {run_id} --limit 1").stdout
    rest = as_json(f"events list --run {run_id} --after {first['cursor']}")
    assert [e["topic"] for e in rest] == topics[1:]
    assert "job:created" in ok(f"events list --job {job_id}").stdout


def test_a_failing_job_exits_1_and_retry_runs_the_rest(catalog_url: str, tmp_path: Path) -> None:
    gate, out = tmp_path / "gate", tmp_path / "out.jsonl"
    job_id = create(
        "--name gated",
        "--step",
        step("test.gate", path=str(gate)),
        "--step",
        step("test.record", path=str(out), label="after"),
    )
    failed = cli(f"jobs execute {job_id} --json")
    assert failed.exit_code == 1, failed.output
    run = json.loads(failed.stdout)
    assert run["status"] == "FAILED"
    assert [s["status"] for s in run["workflowRuns"]] == ["FAILED", "NOT_RUN"]
    assert not out.exists()

    refused = error_line(cli(f"jobs cancel {run['id']}"), 1)
    assert run["id"] in refused and "FAILED" in refused

    gate.write_text("open")
    new_id = first_line(ok(f"jobs retry {run['id']} --no-wait"))
    again = as_json(f"runs get {new_id}")
    assert (again["status"], again["retryOf"], again["attempt"]) == ("COMPLETED", run["id"], 2)
    assert out.read_text().count("\n") == 1


def test_immediate_trigger_runs_on_create(catalog_url: str) -> None:
    result = ok("jobs create --name now --trigger immediate --step", step("test.chunks", count=3))
    assert "COMPLETED" in result.stdout and "3/3" in result.stdout
    job = as_json(f"jobs get {first_line(result)}")
    assert job["status"] == "COMPLETED" and job["lastRunId"]


def test_watch_follows_a_run_to_its_end(catalog_url: str) -> None:
    job_id = create("--name sleepy --step", step("test.sleep", seconds=0.6))
    run = jp.execute(job_id, wait=False)
    try:
        result = ok(f"runs watch {run.id}")
    finally:
        engine.wait_for_background()
    assert "COMPLETED" in result.stdout and run.id in result.stdout


def test_cancel_a_running_run_then_watch_exits_1(catalog_url: str) -> None:
    job_id = create("--name long --step", step("test.sleep", seconds=30))
    run = jp.execute(job_id, wait=False)
    try:
        assert first_line(ok(f"jobs cancel {run.id}")).startswith(
            f"cancel requested for run {run.id}"
        )
        watched = cli(f"runs watch {run.id} --json")
    finally:
        engine.wait_for_background()
    assert watched.exit_code == 1, watched.output
    assert json.loads(watched.stdout)["status"] == "CANCELED"


# --------------------------------------------------------------------------- workflows


def test_workflows_list_get_and_register(catalog_url: str, tmp_path: Path) -> None:
    assert {"test.noop", "test.record"} <= {w["id"] for w in as_json("workflows list")}
    assert "test.record" in ok("workflows list").stdout
    record = as_json("workflows get test.record")
    assert set(record["parameterSchema"]["properties"]) == {"path", "label"}
    assert "path, label" in ok("workflows get test.record").stdout

    (mine,) = as_json(
        "workflows register tests.workflows:noop --id cli.noop --retries 2 --isolation process"
    )
    assert (mine["id"], mine["retries"], mine["isolation"]) == ("cli.noop", 2, "process")
    assert mine["organizationId"] is not None
    flows_file = tmp_path / "extra_flows.py"
    flows_file.write_text(
        "from prefect import flow\n\n@flow(name='extra')\ndef extra() -> None: ...\n"
    )
    (shared,) = as_json(f"workflows register {flows_file}:extra --id cli.extra --builtin")
    assert (shared["id"], shared["organizationId"]) == ("cli.extra", None)
    assert shared["entrypoint"] == f"{flows_file}:extra"
    assert "test.record" in {w["id"] for w in as_json("workflows register tests.workflows")}

    assert "entrypoint" in error_line(cli("workflows register tests.workflows:nope"), 2)
    assert "module" in error_line(cli("workflows register no_such_module_here"), 2)
    assert "TARGET" in error_line(cli("workflows register tests.workflows --id x"), 2)
    assert "workflow 'nope' not found" in error_line(cli("workflows get nope"), 1)


# --------------------------------------------------------------------------- errors, options


@pytest.mark.parametrize(
    ("command", "code", "named"),
    [
        ("jobs create --name x -w nope", 2, "jobConfigJson.workflowExecutionOrder[0]: unknown"),
        ("jobs create --name x --step '{not json'", 2, "--step"),
        ("jobs create --name x --config '[1, 2]'", 2, "--config"),
        ("jobs create --name x --file -", 2, "--file"),
        ("jobs create --name x --file /no/such/file.json", 2, "--file"),
        ("jobs create -w test.noop", 2, "name"),
        ("jobs create --name x -w test.noop --step '\"test.noop\"'", 2, "--workflow"),
        (
            """jobs create --name x --step '{"workflowId": "test.record", "parameters": {}}'""",
            2,
            "jobConfigJson.workflowExecutionOrder[0].parameters",
        ),
        ("jobs create --name x --type spreadsheet", 2, "--type"),
        ("jobs get us_jb_nope", 1, "job 'us_jb_nope' not found"),
        ("jobs execute us_jb_nope", 1, "job 'us_jb_nope' not found"),
        ("runs get us_jr_nope", 1, "job run 'us_jr_nope' not found"),
        ("jobs list --page 0", 2, "--page"),
        ("jobs get", 2, "JOB_ID"),
    ],
)
def test_bad_input_ends_with_one_error_line(
    catalog_url: str, command: str, code: int, named: str
) -> None:
    line = error_line(cli(command, input="{broken"), code)
    assert named in line, line


def test_the_organization_option_scopes_every_call(catalog_url: str) -> None:
    job_id = create("--name mine -w test.noop")
    assert as_json("-o other jobs list")["total"] == 0
    error_line(cli(f"-o other jobs get {job_id}"), 1)
    assert "test.noop" in error_line(cli("-o other jobs create --name x -w test.noop"), 2)
    ok("-o other workflows register tests.workflows:noop --id cli.other")
    theirs = first_line(ok("-o other jobs create --name theirs -w cli.other"))
    assert as_json(f"-o other jobs get {theirs}")["name"] == "theirs"
    assert [j["id"] for j in as_json("jobs list")["items"]] == [job_id]


def test_no_arguments_shows_help(catalog_url: str) -> None:
    for command in ("", "jobs", "runs", "workflows", "events"):
        result = cli(command)
        assert result.exit_code == 2
        assert "Usage" in result.output and "error:" not in result.output


# --------------------------------------------------------------------------- demo


def test_demo_prints_each_status_and_writes_the_reports(catalog_url: str, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    result = ok(f"demo --pos-dir {tmp_path / 'pos'} --output-dir {reports}")
    lines = result.stdout.splitlines()
    labels = [line.split()[0] for line in lines if line.split()[1:2] == ["parts"]]
    assert [label for label in labels if label != "UPDATED"] == [
        "PLANNING",
        "READY",
        "EXECUTING",
        "COMPLETED",
    ], result.stdout
    assert labels.count("UPDATED") >= 4
    assert any(line.startswith("READY      parts 0/4   0%") for line in lines), result.stdout
    completed = next(line for line in lines if line.startswith("COMPLETED"))
    done, parts = completed.split()[2].split("/")
    assert done == parts and completed.split()[3] == "100%", completed
    assert f"reports: {reports / yesterday}" in lines
    assert lines[-1].startswith("prefect flow run: ") and not lines[-1].endswith("None")
    assert {p.name for p in (reports / yesterday).iterdir()} >= {"sales.csv", "payments.csv"}
