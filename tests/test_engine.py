"""Real runs against the session's Prefect server: order, failure, crash, cancel, retry,
isolation, Prefect-side structure (subflow links, names, tags) and event order."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.sorting import FlowRunSort
from prefect.utilities.asyncutils import run_coro_as_sync

import jobs_plugin as jp
from jobs_plugin import JobStatus, Topic, WorkflowRunStatus, engine
from jobs_plugin.translation import JobStatus as S


def step(workflow_id: str, **parameters: Any) -> dict[str, Any]:
    return {"workflowId": workflow_id, "parameters": parameters}


def make_job(*steps: Any, name: str = "engine-test", **fields: Any) -> jp.JobPublic:
    return jp.create_job(
        name=name, job_config_json={"workflowExecutionOrder": list(steps)}, **fields
    )


def topics(run_id: str) -> list[str]:
    return [e.topic for e in jp.list_events(run_id=run_id)]


def assert_run_events_well_formed(run_id: str) -> None:
    """Sequences 1..n, statuses never go backwards, exactly one terminal event, last."""
    events = jp.list_events(run_id=run_id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    ranks = [S(e.payload["status"]).rank for e in events if e.payload]
    assert ranks == sorted(ranks)
    terminal = [e for e in events if e.topic in ("job:completed", "job:failed", "job:canceled")]
    assert len(terminal) == 1 and terminal[0] is events[-1]
    processed = [e.payload["processed"] for e in events if e.payload]
    assert processed == sorted(processed)
    assert all(0 <= e.payload["processed"] <= e.payload["parts"] for e in events if e.payload)


def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# --------------------------------------------------------------------------- success


def test_workflows_run_in_order_and_the_run_completes(any_catalog_url: str, tmp_path: Path) -> None:
    out = tmp_path / "order.jsonl"
    job = make_job(*(step("test.record", path=str(out), label=str(i)) for i in range(3)))
    run = jp.execute(job.id)

    assert run.status is JobStatus.COMPLETED
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["label"] for line in lines] == ["0", "1", "2"]
    assert [line["position"] for line in lines] == [0, 1, 2]
    assert (run.parts, run.processed, run.progress) == (3, 3, 100)
    assert run.started_at is not None and run.finished_at is not None
    assert [s.status for s in run.workflow_runs] == [WorkflowRunStatus.COMPLETED] * 3
    # One job:updated as each workflow starts (it becomes the current one) and one as it ends.
    assert topics(run.id) == ["job:waiting", "job:started", *["job:updated"] * 6, "job:completed"]
    updates = [e.payload for e in jp.list_events(run_id=run.id, topic="job:updated")]
    assert [(u["workflow"]["position"], u["workflow"]["status"]) for u in updates] == [
        (0, "RUNNING"),
        (0, "COMPLETED"),
        (1, "RUNNING"),
        (1, "COMPLETED"),
        (2, "RUNNING"),
        (2, "COMPLETED"),
    ]
    assert updates[2]["info"] == "running record (step 2)"
    assert_run_events_well_formed(run.id)
    assert jp.get_job(job.id).status is JobStatus.COMPLETED


def test_prefect_sees_one_parent_flow_run_with_named_tagged_subflows(catalog_url: str) -> None:
    job = make_job("test.noop", "test.noop", name="Nightly sync")
    run = jp.execute(job.id)
    assert run.prefect_flow_run_id is not None

    async def children() -> list[Any]:
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.prefect_flow_run_id])
                ),
                sort=FlowRunSort.NAME_ASC,
                limit=10,
            )

    subflows = sorted(run_coro_as_sync(children()) or [], key=lambda r: r.name)
    assert [r.name for r in subflows] == ["Nightly sync/01-test.noop", "Nightly sync/02-test.noop"]
    assert {str(r.id) for r in subflows} == {s.prefect_flow_run_id for s in run.workflow_runs}
    for sub in subflows:
        assert sub.state is not None and sub.state.is_completed()
        assert {"prefect-jobs", f"job:{job.id}", f"job-run:{run.id}", "workflow:test.noop"} <= set(
            sub.tags
        )
        assert f"org:{job.organization_id}" in sub.tags


def test_compiling_the_same_job_twice_gives_an_equivalent_flow(catalog_url: str) -> None:
    job = make_job("test.noop", step("test.sleep", seconds=0.01), name="twice")
    first, second = jp.compile_job(job.id), jp.compile_job(job.id)
    assert first.name == second.name == "twice"
    assert first.version == second.version
    assert first.parameters == second.parameters
    jp.update_job(job.id, name="twice-renamed")
    assert jp.compile_job(job.id).version != first.version
    assert jp.compile_job(job.id, version=1).version == first.version


def test_parts_declared_by_a_workflow_count_towards_the_run(catalog_url: str) -> None:
    job = make_job("test.noop", step("test.chunks", count=5))
    run = jp.execute(job.id)
    assert run.status is JobStatus.COMPLETED
    assert (run.parts, run.processed) == (6, 6)
    chunk_step = run.workflow_runs[1]
    assert (chunk_step.parts, chunk_step.processed) == (5, 5)
    assert_run_events_well_formed(run.id)


def test_immediate_trigger_executes_on_create(catalog_url: str, tmp_path: Path) -> None:
    out = tmp_path / "immediate.jsonl"
    job = make_job(step("test.record", path=str(out), label="x"), trigger="immediate")
    engine.wait_for_background(60)
    assert job.last_run_id is not None
    run = jp.get_run(job.last_run_id)
    assert run.status is JobStatus.COMPLETED
    assert out.exists()


# --------------------------------------------------------------------------- failure


def test_a_failure_halts_the_run_and_later_workflows_are_not_run(
    any_catalog_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "fail.jsonl"
    job = make_job(
        step("test.record", path=str(out), label="before"),
        step("test.fail", message="no sales file"),
        step("test.record", path=str(out), label="after"),
    )
    run = jp.execute(job.id)

    assert run.status is JobStatus.FAILED
    assert [s.status for s in run.workflow_runs] == [
        WorkflowRunStatus.COMPLETED,
        WorkflowRunStatus.FAILED,
        WorkflowRunStatus.NOT_RUN,
    ]
    assert "no sales file" in (run.workflow_runs[1].error or "")
    assert run.outcome is not None and "test.fail" in run.outcome["message"]
    assert "step 2 of 3" in run.outcome["message"]
    assert out.read_text().count("\n") == 1
    assert (run.parts, run.processed) == (3, 1)
    assert topics(run.id)[-1] == "job:failed"
    assert_run_events_well_formed(run.id)


def test_workflow_retries_are_prefect_retries(catalog_url: str, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    job = make_job(
        {
            "workflowId": "test.flaky",
            "parameters": {"counter_path": str(counter), "fail_times": 2},
            "retries": 2,
        }
    )
    run = jp.execute(job.id)
    assert run.status is JobStatus.COMPLETED
    assert counter.read_text() == "3"


def test_a_workflow_timeout_fails_the_run(catalog_url: str) -> None:
    job = make_job({"workflowId": "test.sleep", "parameters": {"seconds": 30}, "timeoutSeconds": 1})
    started = time.monotonic()
    run = jp.execute(job.id)
    assert time.monotonic() - started < 25
    assert run.status is JobStatus.FAILED
    assert run.workflow_runs[0].status is WorkflowRunStatus.FAILED


def test_a_crashing_workflow_process_fails_the_run(catalog_url: str) -> None:
    job = make_job({"workflowId": "test.crash", "isolation": "process"}, "test.noop")
    run = jp.execute(job.id)
    assert run.status is JobStatus.FAILED
    crashed = run.workflow_runs[0]
    assert crashed.status is WorkflowRunStatus.FAILED
    assert "exited with code 3" in (crashed.error or "")
    assert run.workflow_runs[1].status is WorkflowRunStatus.NOT_RUN
    assert_run_events_well_formed(run.id)


def test_planning_failure_ends_the_run_failed(catalog_url: str) -> None:
    """A workflow unregistered after the job was created: the run fails in PLANNING."""
    from jobs_plugin.db import write_session
    from jobs_plugin.models import Workflow

    jp.register_workflow("tests.workflows:noop", id="test.ephemeral")
    job = make_job("test.ephemeral")
    with write_session() as session:
        session.delete(session.get(Workflow, "test.ephemeral"))
    run = jp.execute(job.id)
    assert run.status is JobStatus.FAILED
    assert "unknown workflow id 'test.ephemeral'" in (run.info or "")
    assert run.prefect_flow_run_id is None
    assert topics(run.id) == ["job:failed"]


# --------------------------------------------------------------------------- retry


def test_retry_resumes_at_the_failed_workflow(any_catalog_url: str, tmp_path: Path) -> None:
    out = tmp_path / "retry.jsonl"
    gate = tmp_path / "gate"
    job = make_job(
        step("test.record", path=str(out), label="first"),
        step("test.gate", path=str(gate)),
        step("test.record", path=str(out), label="last"),
    )
    failed = jp.execute(job.id)
    assert failed.status is JobStatus.FAILED

    gate.write_text("open")
    retried = jp.retry(failed.id)

    assert retried.status is JobStatus.COMPLETED
    assert retried.attempt == 2 and retried.retry_of == failed.id
    assert retried.start_position == 1
    labels = [json.loads(line)["label"] for line in out.read_text().splitlines()]
    assert labels == ["first", "last"]  # the first workflow was not run again
    first = retried.workflow_runs[0]
    assert first.status is WorkflowRunStatus.COMPLETED
    assert first.reused_from == failed.workflow_runs[0].id
    assert (retried.parts, retried.processed) == (3, 3)
    assert_run_events_well_formed(retried.id)
    with pytest.raises(jp.InvalidTransition):
        jp.retry(retried.id)


# --------------------------------------------------------------------------- cancel


def test_cancel_interrupts_a_running_async_workflow(catalog_url: str, tmp_path: Path) -> None:
    started = tmp_path / "started"
    out = tmp_path / "after.jsonl"
    job = make_job(
        step("test.sleep", seconds=60, started_path=str(started)),
        step("test.record", path=str(out), label="after"),
    )
    run = jp.execute(job.id, wait=False)
    assert run.status is JobStatus.PLANNING
    wait_for(started.exists)
    t0 = time.monotonic()
    jp.cancel(run.id)
    engine.wait_for_background(60)
    assert time.monotonic() - t0 < 20

    final = jp.get_run(run.id)
    assert final.status is JobStatus.CANCELED
    assert [s.status for s in final.workflow_runs] == [
        WorkflowRunStatus.CANCELED,
        WorkflowRunStatus.NOT_RUN,
    ]
    assert not out.exists()
    assert topics(run.id)[-1] == "job:canceled"
    assert_run_events_well_formed(run.id)

    async def prefect_state() -> Any:
        async with get_client() as client:
            return (await client.read_flow_run(final.workflow_runs[0].prefect_flow_run_id)).state

    assert run_coro_as_sync(prefect_state()).is_cancelled()


def test_cancel_kills_a_workflow_process(catalog_url: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    job = make_job(
        {
            "workflowId": "test.sync-sleep",
            "parameters": {"seconds": 120, "started_path": str(pid_file)},
            "isolation": "process",
        }
    )
    run = jp.execute(job.id, wait=False)
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "", timeout=90)
    pid = int(pid_file.read_text())
    jp.cancel(run.id)
    engine.wait_for_background(60)
    assert jp.get_run(run.id).status is JobStatus.CANCELED
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_cancel_before_the_next_workflow(catalog_url: str, tmp_path: Path) -> None:
    """A synchronous inline workflow cannot be interrupted; the run stops right after it."""
    started = tmp_path / "started"
    out = tmp_path / "after.jsonl"
    job = make_job(
        step("test.sync-sleep", seconds=1.5, started_path=str(started)),
        step("test.record", path=str(out), label="after"),
    )
    run = jp.execute(job.id, wait=False)
    wait_for(started.exists)
    jp.cancel(run.id)
    engine.wait_for_background(60)
    final = jp.get_run(run.id)
    assert final.status is JobStatus.CANCELED
    assert final.workflow_runs[1].status is WorkflowRunStatus.NOT_RUN
    assert not out.exists()
    with pytest.raises(jp.InvalidTransition):
        jp.cancel(run.id)


def test_retry_after_cancel_runs_the_rest(catalog_url: str, tmp_path: Path) -> None:
    started = tmp_path / "started"
    release = tmp_path / "release"
    out = tmp_path / "rest.jsonl"
    job = make_job(
        step("test.record", path=str(out), label="one"),
        step("test.sleep", seconds=60, started_path=str(started), release_path=str(release)),
        step("test.record", path=str(out), label="three"),
    )
    run = jp.execute(job.id, wait=False)
    wait_for(started.exists)
    jp.cancel(run.id)
    engine.wait_for_background(60)
    assert jp.get_run(run.id).status is JobStatus.CANCELED
    jp.update_job(job.id, job_config_json={"workflowExecutionOrder": ["test.noop"]})
    release.write_text("go")

    retried = jp.retry(run.id, wait=True)
    # The retry runs the version the canceled run ran, not the job's newer configuration.
    assert retried.job_version == 1
    assert retried.status is JobStatus.COMPLETED
    assert retried.start_position == 1
    assert [s.workflow_id for s in retried.workflow_runs] == [
        "test.record",
        "test.sleep",
        "test.record",
    ]
    labels = [json.loads(line)["label"] for line in out.read_text().splitlines()]
    assert labels == ["one", "three"]


# --------------------------------------------------------------------------- isolation


def test_process_isolation_leaves_nothing_behind(catalog_url: str, tmp_path: Path) -> None:
    """A workflow that mutates module globals, env vars and the cwd: the next workflow, in a
    fresh process, sees none of it — whether the mutation ran inline or in its own process."""
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    for mutate_isolation in ("inline", "process"):
        report = tmp_path / f"report-{mutate_isolation}.json"
        job = make_job(
            {
                "workflowId": "test.mutate",
                "parameters": {"workdir": str(workdir)},
                "isolation": mutate_isolation,
            },
            {
                "workflowId": "test.report",
                "parameters": {"path": str(report)},
                "isolation": "process",
            },
        )
        cwd = os.getcwd()
        run = jp.execute(job.id)
        assert run.status is JobStatus.COMPLETED, run.outcome
        seen = json.loads(report.read_text())
        assert seen["marker"] is None, mutate_isolation
        assert seen["env"] is None, mutate_isolation
        assert seen["cwd"] == cwd, mutate_isolation
        assert seen["pid"] != os.getpid()
        # The job's own process is left as it was, too.
        assert os.getcwd() == cwd
        assert "PREFECT_JOBS_TEST_LEAK" not in os.environ


def test_inline_isolation_restores_env_and_cwd(catalog_url: str, tmp_path: Path) -> None:
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    report = tmp_path / "report.json"
    cwd = os.getcwd()
    job = make_job(step("test.mutate", workdir=str(workdir)), step("test.report", path=str(report)))
    assert jp.execute(job.id).status is JobStatus.COMPLETED
    seen = json.loads(report.read_text())
    assert seen["env"] is None and seen["cwd"] == cwd
    # Module globals are shared inline: that is what process isolation is for.
    assert seen["marker"] == "yes"


def test_workflow_sees_only_its_parameters_and_a_read_only_context(
    catalog_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "ctx.jsonl"
    job = make_job(step("test.record", path=str(out), label="a"))
    run = jp.execute(job.id)
    line = json.loads(out.read_text())
    assert line == {"label": "a", "position": 0, "workflow": "test.record", "run": run.id}
    ctx = jp.RunContext(
        job_id="j",
        job_name="n",
        run_id="r",
        organization_id="o",
        attempt=1,
        workflow_id="w",
        workflow_run_id="x",
        position=0,
    )
    with pytest.raises(AttributeError):
        ctx.run_id = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------- events


def test_subscribe_delivers_a_runs_events_in_order(catalog_url: str) -> None:
    seen: list[jp.EventPublic] = []
    job = make_job("test.noop", step("test.chunks", count=3))
    with jp.subscribe(seen.append, job_id=job.id):
        run = jp.execute(job.id)
    run_events = [e for e in seen if e.run_id == run.id]
    assert [e.topic for e in run_events] == topics(run.id)
    assert run_events[0].topic == Topic.WAITING.value
    assert run_events[-1].topic == Topic.COMPLETED.value
    cursors = [e.cursor for e in seen]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)


def test_a_deployment_step_without_its_deployment_fails_saying_so(catalog_url: str) -> None:
    job = jp.create_job(
        name="no deployment",
        job_config_json={
            "workflowExecutionOrder": [
                "test.noop",
                {"workflowId": "test.chunks", "isolation": "deployment"},
                "test.noop",
            ]
        },
    )
    [_, step, _] = jp.plan(job.id)
    assert (step["isolation"], step["deployment"]) == ("deployment", "chunks/test.chunks")
    run = jp.execute(job.id)
    assert run.status is JobStatus.FAILED
    assert "there is no Prefect deployment 'chunks/test.chunks'" in (run.info or "")
    assert [s.status for s in run.workflow_runs] == [
        WorkflowRunStatus.COMPLETED,
        WorkflowRunStatus.FAILED,
        WorkflowRunStatus.NOT_RUN,
    ]
    assert "workflows deploy" in (run.workflow_runs[1].error or "")
