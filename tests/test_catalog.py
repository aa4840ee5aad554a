"""The catalog on real databases: every test runs on SQLite and on PostgreSQL (`any_catalog_url`).

Jobs are made through the public Python API (`jobs_plugin`); runs, states and progress through
`jobs_plugin.catalog`, without a Prefect flow run behind them.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from prefect.client.schemas.objects import StateType
from sqlmodel import func, select

import jobs_plugin as jp
from jobs_plugin import catalog, db
from jobs_plugin.api import organization_id
from jobs_plugin.models import Event, EventPublic, Job, JobRun, JobVersion, WorkflowRun
from jobs_plugin.translation import JobStatus, WorkflowRunStatus
from tests.factories import job_fields, make_job, planned_run

pytestmark = pytest.mark.usefixtures("any_catalog_url")


@pytest.fixture(scope="module")
def prefect_api() -> None:
    """Overrides the session's Prefect test server: nothing in this module talks to a Prefect
    API, so it runs without waiting for one to start."""


# --------------------------------------------------------------------------- helpers


def _row_counts() -> dict[str, int]:
    """Rows of every table a job write touches, in every organization, deleted or not."""
    with db.read_session() as session:
        return {
            model.__name__: session.exec(select(func.count()).select_from(model)).one()
            for model in (Job, JobVersion, JobRun, WorkflowRun, Event)
        }


def _events(run_id: str | None = None, job_id: str | None = None) -> list[EventPublic]:
    """Events of the default organization, oldest first."""
    found = catalog.list_events(organization_id(), run_id=run_id, job_id=job_id, limit=10_000)
    return [EventPublic.model_validate(e) for e in found]


def _payload(event: EventPublic) -> dict[str, Any]:
    assert event.payload is not None, event
    return event.payload


def _job_events(job_id: str) -> list[EventPublic]:
    """Events of the job itself (not of its runs)."""
    return [e for e in _events(job_id=job_id) if e.run_id is None]


def _topics(events: list[EventPublic]) -> list[str]:
    return [e.topic for e in events]


def _step(run_id: str, position: int = 0) -> WorkflowRun:
    return catalog.list_workflow_runs(run_id)[position]


# --------------------------------------------------------------------------- create, get, list


def test_create_and_get_round_trip() -> None:
    job = make_job(
        "round-trip",
        {"workflowId": "test.record", "parameters": {"path": "/tmp/x", "label": "a"}},
        "test.noop",
        source_provider="s3",
        type="sheet",
        operation="map",
        source="in",
        destination="out",
        config={"k": 1},
        metadata={"m": [1, 2]},
        actor="alice",
    )
    got = jp.get_job(job.id)
    assert got == job
    assert got.version == 1
    assert got.status is JobStatus.READY  # manual trigger: ready to be run
    assert got.created_by == got.updated_by == "alice"
    assert got.job_metadata == {"m": [1, 2]}
    order = got.job_config_json.workflow_execution_order
    assert [s.workflow_id for s in order] == ["test.record", "test.noop"]
    assert order[0].parameters == {"path": "/tmp/x", "label": "a"}
    assert _topics(_job_events(job.id)) == ["job:created"]
    versions = jp.list_versions(job.id)
    assert [v.version for v in versions] == [1]
    assert versions[0].snapshot["name"] == "round-trip"
    assert versions[0].snapshot["source_provider"] == "s3"


def test_list_pages_with_total_page_count_and_both_sort_directions() -> None:
    ids = [make_job(f"job-{i}").id for i in range(5)]

    first = jp.list_jobs(page_size=2)
    assert (first.total, first.page_count, first.page_number, first.page_size) == (5, 3, 1, 2)
    pages = [jp.list_jobs(page_size=2, page_number=n) for n in (1, 2, 3)]
    assert [len(p.items) for p in pages] == [2, 2, 1]
    assert all(p.total == 5 and p.page_count == 3 for p in pages)
    newest_first = [j.id for p in pages for j in p.items]
    assert newest_first == ids[::-1]

    ascending = [
        j.id
        for n in (1, 2, 3)
        for j in jp.list_jobs(page_size=2, page_number=n, sort_direction="asc").items
    ]
    assert ascending == ids

    beyond = jp.list_jobs(page_size=2, page_number=4)
    assert beyond.items == []
    assert beyond.total == 5

    exact = jp.list_jobs(page_size=5)
    assert (len(exact.items), exact.page_count) == (5, 1)
    assert jp.list_jobs(page_size=1000).page_count == 1


def test_an_empty_list_has_one_page() -> None:
    page = jp.list_jobs()
    assert (page.items, page.total, page.page_count) == ([], 0, 1)


def test_list_refuses_bad_arguments_naming_the_field() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"page_number": 0}, "pageNumber"),
        ({"page_size": 0}, "pageSize"),
        ({"page_size": 1001}, "pageSize"),
        ({"sort_direction": "sideways"}, "sortDirection"),
        ({"status": "DONE"}, "status"),
    ]
    for arguments, field in cases:
        with pytest.raises(jp.ValidationError) as raised:
            jp.list_jobs(**arguments)
        assert raised.value.field == field, arguments


def test_list_filters_by_status_source_provider_type_and_operation() -> None:
    file_job = make_job("file", source_provider="s3", type="file", operation="extract")
    sheet_map = make_job("sheet-map", source_provider="s3", type="sheet", operation="map")
    book_export = make_job(
        "book-export", source_provider="gcs", type="workbook", operation="export"
    )
    plain = make_job("plain")
    catalog.create_run(plain.id, plain.organization_id)  # its job goes to PLANNING

    def ids(**filters: Any) -> set[str]:
        page = jp.list_jobs(**filters)
        assert page.total == len(page.items)
        return {j.id for j in page.items}

    assert ids() == {file_job.id, sheet_map.id, book_export.id, plain.id}
    assert ids(status=JobStatus.PLANNING) == {plain.id}
    assert ids(status="planning") == {plain.id}
    assert ids(status="READY") == {file_job.id, sheet_map.id, book_export.id}
    assert ids(status=JobStatus.COMPLETED) == set()
    assert ids(source_provider="s3") == {file_job.id, sheet_map.id}
    assert ids(source_provider="gcs") == {book_export.id}
    assert ids(source_provider="ftp") == set()
    assert ids(type="file") == {file_job.id}
    assert ids(type="sheet") == {sheet_map.id}
    assert ids(operation="export") == {book_export.id}
    assert ids(operation="map", type="workbook") == set()
    assert ids(source_provider="s3", operation="map", status="READY") == {sheet_map.id}


# --------------------------------------------------------------------------- organizations


def test_jobs_of_one_organization_are_invisible_to_another() -> None:
    # The test workflows belong to the default organization, so that is "a" here.
    job = make_job("secret")
    run = planned_run(job)
    b_id = organization_id("b")
    assert b_id != job.organization_id

    assert jp.get_job(job.id, organization=None).id == job.id
    with pytest.raises(jp.JobNotFound):
        jp.get_job(job.id, organization="b")
    assert jp.list_jobs(organization="b").total == 0
    assert jp.list_jobs(organization="b").items == []
    with pytest.raises(jp.JobNotFound):
        jp.update_job(job.id, organization="b", name="stolen")
    with pytest.raises(jp.JobNotFound):
        jp.delete_job(job.id, organization="b")
    with pytest.raises(jp.JobNotFound):
        jp.list_versions(job.id, organization="b")
    with pytest.raises(jp.RunNotFound):
        catalog.get_run(run.id, b_id)
    with pytest.raises(jp.RunNotFound):
        catalog.request_cancel(run.id, b_id)
    with pytest.raises(jp.JobNotFound):
        jp.list_runs(job.id, organization="b")
    assert jp.list_runs(organization="b").total == 0
    assert jp.list_events(organization="b") == []

    # Nothing of the attempts above reached org "a"'s job.
    unchanged = jp.get_job(job.id, organization=None)
    assert (unchanged.name, unchanged.version) == ("secret", 1)
    assert jp.list_jobs(organization=None).total == 1


# --------------------------------------------------------------------------- versions


def test_update_makes_a_version_only_on_a_real_change_and_keeps_every_version() -> None:
    job = make_job("v", "test.noop")

    same = jp.update_job(job.id, name="v")
    assert same.version == 1
    # The same order spelled differently (object instead of bare id) is no change either.
    same = jp.update_job(
        job.id, job_config_json={"workflowExecutionOrder": [{"workflowId": "test.noop"}]}
    )
    assert same.version == 1
    assert _topics(_job_events(job.id)) == ["job:created"]

    renamed = jp.update_job(job.id, name="v2", actor="bob")
    assert renamed.version == 2
    assert renamed.updated_by == "bob"
    reordered = jp.update_job(
        job.id, job_config_json={"workflowExecutionOrder": ["test.noop", "test.noop"]}
    )
    assert reordered.version == 3
    described = jp.update_job(job.id, metadata={"note": "x"})
    assert described.version == 4
    assert jp.get_job(job.id).version == 4

    versions = jp.list_versions(job.id)
    assert [v.version for v in versions] == [1, 2, 3, 4]
    assert [v.snapshot["name"] for v in versions] == ["v", "v2", "v2", "v2"]
    assert [len(v.snapshot["job_config_json"]["workflowExecutionOrder"]) for v in versions] == [
        1,
        1,
        2,
        2,
    ]
    assert [v.snapshot["version"] for v in versions] == [1, 2, 3, 4]
    assert versions[3].snapshot["job_metadata"] == {"note": "x"}
    assert versions[1].created_by == "bob"

    updates = [e for e in _job_events(job.id) if e.topic == "job:updated"]
    assert [_payload(e)["version"] for e in updates] == [2, 3, 4]
    assert [_payload(e)["changed"] for e in updates] == [
        ["name"],
        ["job_config_json"],
        ["job_metadata"],
    ]


def test_a_run_keeps_the_version_it_was_created_on() -> None:
    job = make_job("frozen")
    jp.update_job(job.id, name="frozen-2")
    old = catalog.create_run(job.id, job.organization_id, version=1)
    new = catalog.create_run(job.id, job.organization_id)
    assert (old.job_version, old.snapshot["name"]) == (1, "frozen")
    assert (new.job_version, new.snapshot["name"]) == (2, "frozen-2")
    with pytest.raises(jp.JobNotFound):
        catalog.create_run(job.id, job.organization_id, version=9)


def test_a_stale_expected_version_is_a_conflict_and_writes_nothing() -> None:
    job = make_job("occ")
    first = jp.update_job(job.id, expected_version=1, name="occ-first")
    assert first.version == 2
    before = _row_counts()

    with pytest.raises(jp.VersionConflict):
        jp.update_job(job.id, expected_version=1, name="occ-lost")

    assert _row_counts() == before
    current = jp.get_job(job.id)
    assert (current.name, current.version) == ("occ-first", 2)
    assert [v.version for v in jp.list_versions(job.id)] == [1, 2]
    assert jp.update_job(job.id, expected_version=2, name="occ-second").version == 3


# --------------------------------------------------------------------------- delete


def test_delete_is_soft_and_leaves_a_deleted_event() -> None:
    job = make_job("doomed")
    keep = make_job("kept")
    jp.delete_job(job.id, actor="carol")

    with pytest.raises(jp.JobNotFound):
        jp.get_job(job.id)
    assert [j.id for j in jp.list_jobs().items] == [keep.id]
    assert jp.list_jobs().total == 1
    with pytest.raises(jp.JobNotFound):
        jp.update_job(job.id, name="ghost")
    with pytest.raises(jp.JobNotFound):
        jp.delete_job(job.id)
    with pytest.raises(jp.JobNotFound):
        catalog.create_run(job.id, job.organization_id)

    events = _job_events(job.id)
    assert _topics(events) == ["job:created", "job:deleted"]
    assert events[-1].payload == {"deletedBy": "carol"}
    with db.read_session() as session:
        row = session.get(Job, job.id)
        assert row is not None
        assert row.deleted_at is not None
        versions = session.exec(select(JobVersion).where(JobVersion.job_id == job.id)).all()
        assert len(versions) == 1


def test_a_job_with_an_unfinished_run_cannot_be_deleted() -> None:
    job = make_job("busy")
    run = planned_run(job)
    with pytest.raises(jp.InvalidTransition):
        jp.delete_job(job.id)
    assert jp.get_job(job.id).id == job.id
    assert "job:deleted" not in _topics(_job_events(job.id))

    catalog.observe_state(run.id, StateType.COMPLETED, "Completed")
    jp.delete_job(job.id)
    with pytest.raises(jp.JobNotFound):
        jp.get_job(job.id)


# --------------------------------------------------------------------------- validation

ORDER = "jobConfigJson.workflowExecutionOrder"
RECORD_OK = {"workflowId": "test.record", "parameters": {"path": "/tmp/p", "label": "l"}}

INVALID_JOBS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-workflow", job_fields("j", "no.such.workflow"), f"{ORDER}[0]"),
    ("unknown-second-workflow", job_fields("j", "test.noop", "no.such"), f"{ORDER}[1]"),
    ("empty-order", {"name": "j", "job_config_json": {"workflowExecutionOrder": []}}, ORDER),
    ("no-config", {"name": "j"}, ORDER),
    ("bad-trigger", job_fields("j", trigger="sometimes"), "trigger"),
    ("file-export", job_fields("j", type="file", operation="export"), "operation"),
    ("workbook-extract", job_fields("j", type="workbook", operation="extract"), "operation"),
    ("operation-without-type", job_fields("j", operation="map"), "type"),
    ("bad-type", job_fields("j", type="folder"), "type"),
    ("bad-operation", job_fields("j", type="file", operation="shred"), "operation"),
    (
        "missing-required-parameter",
        job_fields("j", {"workflowId": "test.record", "parameters": {"path": "/tmp/p"}}),
        f"{ORDER}[0].parameters",
    ),
    (
        "wrongly-typed-parameter",
        job_fields("j", "test.noop", {"workflowId": "test.sleep", "parameters": {"seconds": "x"}}),
        f"{ORDER}[1].parameters",
    ),
    (
        "unexpected-parameter",
        job_fields("j", {"workflowId": "test.noop", "parameters": {"nope": 1}}),
        f"{ORDER}[0].parameters",
    ),
    (
        "unknown-step-setting",
        job_fields("j", {"workflowId": "test.noop", "bogus": 1}),
        f"{ORDER}[0].bogus",
    ),
    (
        "negative-step-retries",
        job_fields("j", {"workflowId": "test.noop", "retries": -1}),
        f"{ORDER}[0].retries",
    ),
    ("slash-in-name", job_fields("a/b"), "name"),
    ("angle-in-name", job_fields("a>b"), "name"),
    ("empty-name", job_fields(""), "name"),
    ("missing-name", {"job_config_json": {"workflowExecutionOrder": ["test.noop"]}}, "name"),
]


INVALID_UPDATES: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown-workflow",
        {"job_config_json": {"workflowExecutionOrder": ["no.such"]}},
        f"{ORDER}[0]",
    ),
    ("empty-order", {"job_config_json": {"workflowExecutionOrder": []}}, ORDER),
    ("slash-in-name", {"name": "x/y"}, "name"),
    ("file-export", {"type": "file", "operation": "export"}, "operation"),
    ("bad-trigger", {"trigger": "later"}, "trigger"),
    (
        "missing-required-parameter",
        {"job_config_json": {"workflowExecutionOrder": [{"workflowId": "test.record"}]}},
        f"{ORDER}[0].parameters",
    ),
]


def _refusals(attempt: Callable[[dict[str, Any]], object], cases: list[Any]) -> list[str]:
    """Run every case (one database setup for all); describe each one that went wrong."""
    wrong: list[str] = []
    for case_id, fields, field in cases:
        before = _row_counts()
        try:
            attempt(fields)
        except jp.ValidationError as exc:
            if exc.field != field or not exc.message:
                wrong.append(f"{case_id}: field {exc.field!r} ({exc.message}), expected {field!r}")
        else:
            wrong.append(f"{case_id}: accepted")
        if _row_counts() != before:
            wrong.append(f"{case_id}: wrote rows ({before} -> {_row_counts()})")
    return wrong


def test_an_invalid_job_is_refused_naming_the_field_and_nothing_is_written() -> None:
    existing = make_job("existing", RECORD_OK)
    assert _refusals(lambda fields: jp.create_job(**fields), INVALID_JOBS) == []
    assert [j.id for j in jp.list_jobs().items] == [existing.id]


def test_an_invalid_update_is_refused_and_nothing_is_written() -> None:
    job = make_job("stable")
    assert _refusals(lambda changes: jp.update_job(job.id, **changes), INVALID_UPDATES) == []
    assert jp.get_job(job.id) == job
    assert [v.version for v in jp.list_versions(job.id)] == [1]


# --------------------------------------------------------------------------- events


def test_event_sequences_count_from_one_and_cursors_increase() -> None:
    job = make_job("events", "test.noop", "test.noop")
    jp.update_job(job.id, name="events-2")
    run = planned_run(job, "test.noop", "test.noop")
    catalog.observe_state(run.id, StateType.PENDING, "Pending")
    catalog.observe_state(run.id, StateType.RUNNING, "Running")
    first, second = catalog.list_workflow_runs(run.id)
    catalog.start_workflow_run(first.id)
    catalog.report_progress(first.id, parts=3)
    catalog.report_progress(first.id, advance=2)
    catalog.finish_workflow_run(first.id, WorkflowRunStatus.COMPLETED)
    catalog.start_workflow_run(second.id)
    catalog.finish_workflow_run(second.id, WorkflowRunStatus.COMPLETED)
    catalog.observe_state(run.id, StateType.COMPLETED, "Completed")
    other = planned_run(job)
    catalog.observe_state(other.id, StateType.FAILED, "Failed")

    run_events = _events(run_id=run.id)
    # Updates: step 1 starts, declares 3 parts, advances, completes; step 2 starts, completes.
    assert _topics(run_events) == [
        "job:waiting",
        "job:started",
        *["job:updated"] * 6,
        "job:completed",
    ]
    assert [e.sequence for e in run_events] == list(range(1, len(run_events) + 1))
    assert {(e.context or {}).get("runId") for e in run_events} == {run.id}
    # Each run counts on its own; the job's own events count on their own too.
    assert [e.sequence for e in _events(run_id=other.id)] == [1]
    assert [e.sequence for e in _job_events(job.id)] == [1, 2]

    every = _events(job_id=job.id)
    cursors = [e.cursor for e in every]
    assert cursors == sorted(set(cursors))
    assert catalog.latest_cursor() == cursors[-1]
    resumed = catalog.list_events(job.organization_id, after_cursor=cursors[2], limit=10_000)
    assert [EventPublic.model_validate(e).cursor for e in resumed] == cursors[3:]
    assert jp.list_events(topic="job:completed")[0].run_id == run.id
    assert catalog.get_event(every[0].id, job.organization_id).topic == "job:created"
    with pytest.raises(jp.EventNotFound):
        catalog.get_event(every[0].id, organization_id("elsewhere"))


# --------------------------------------------------------------------------- states


def test_observe_state_is_monotonic_on_a_real_run() -> None:
    job = make_job("mono", "test.noop", "test.noop")
    run = planned_run(job, "test.noop", "test.noop")
    assert (run.status, run.parts, run.processed, run.progress) == (JobStatus.PLANNING, 2, 0, 0)
    assert jp.get_job(job.id).status is JobStatus.PLANNING

    ready = catalog.observe_state(run.id, StateType.PENDING, "Pending", prefect_flow_run_id="fr-1")
    assert ready.status is JobStatus.READY
    assert ready.prefect_flow_run_id == "fr-1"
    assert ready.started_at is None
    executing = catalog.observe_state(run.id, StateType.RUNNING, "Running")
    assert executing.status is JobStatus.EXECUTING
    assert executing.started_at is not None
    assert jp.get_job(job.id).status is JobStatus.EXECUTING
    count = len(_events(run_id=run.id))

    for state_type, name in [
        (StateType.PENDING, "Pending"),
        (StateType.SCHEDULED, "AwaitingRetry"),
        (StateType.RUNNING, "Retrying"),
        (StateType.PAUSED, "Suspended"),
        (StateType.CANCELLING, "Cancelling"),
    ]:
        after = catalog.observe_state(run.id, state_type, name, prefect_flow_run_id="fr-2")
        assert after.status is JobStatus.EXECUTING, name
        assert len(_events(run_id=run.id)) == count, name
    assert catalog.get_run(run.id).prefect_flow_run_id == "fr-1"
    assert catalog.get_run(run.id).started_at == executing.started_at

    done = catalog.observe_state(run.id, StateType.COMPLETED, "Completed")
    assert done.status is JobStatus.COMPLETED
    assert (done.processed, done.parts, done.progress) == (2, 2, 100)
    assert done.finished_at is not None
    assert done.outcome == {"heading": "Completed", "message": "2 of 2 parts processed"}
    assert jp.get_job(job.id).status is JobStatus.COMPLETED

    for state_type in (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED, StateType.PENDING):
        assert catalog.observe_state(run.id, state_type).status is JobStatus.COMPLETED
    assert _topics(_events(run_id=run.id)) == ["job:waiting", "job:started", "job:completed"]
    stored = catalog.get_run(run.id)
    assert (stored.status, stored.progress, stored.finished_at) == (
        JobStatus.COMPLETED,
        100,
        done.finished_at,
    )


def test_completing_a_planning_run_enters_every_status_on_the_way() -> None:
    run = planned_run(make_job("skip"))
    done = catalog.observe_state(run.id, StateType.COMPLETED, "Cached")
    assert done.started_at is not None
    events = _events(run_id=run.id)
    assert _topics(events) == ["job:waiting", "job:started", "job:completed"]
    assert [_payload(e)["status"] for e in events] == ["READY", "EXECUTING", "COMPLETED"]


def test_failing_before_it_ran_emits_only_failed() -> None:
    run = planned_run(make_job("early"))
    catalog.observe_state(run.id, StateType.PENDING, "Pending")
    failed = catalog.observe_state(run.id, StateType.FAILED, "TimedOut", message="too slow")
    assert failed.status is JobStatus.FAILED
    assert failed.started_at is None
    assert failed.outcome == {"heading": "Failed", "message": "too slow"}
    assert failed.info == "too slow"
    assert _topics(_events(run_id=run.id)) == ["job:waiting", "job:failed"]


def test_only_the_last_run_drives_the_job_status() -> None:
    job = make_job("two-runs")
    older = planned_run(job)
    newer = planned_run(job)
    catalog.observe_state(older.id, StateType.FAILED, "Failed")
    assert jp.get_job(job.id).status is JobStatus.PLANNING
    catalog.observe_state(newer.id, StateType.RUNNING, "Running")
    assert jp.get_job(job.id).status is JobStatus.EXECUTING


def test_cancel_is_refused_on_a_terminal_run() -> None:
    job = make_job("cancel")
    run = planned_run(job)
    assert not catalog.is_cancel_requested(run.id)
    asked = catalog.request_cancel(run.id, job.organization_id)
    assert asked.cancel_requested_at is not None
    assert catalog.is_cancel_requested(run.id)
    again = catalog.request_cancel(run.id)
    assert again.cancel_requested_at == asked.cancel_requested_at
    assert catalog.get_run(run.id).status is JobStatus.PLANNING  # asking is not ending

    catalog.observe_state(run.id, StateType.CANCELLED, "Cancelled")
    with pytest.raises(jp.InvalidTransition):
        catalog.request_cancel(run.id)
    for state_type, name in [(StateType.COMPLETED, "Completed"), (StateType.FAILED, "Failed")]:
        other = planned_run(job)
        catalog.observe_state(other.id, state_type, name)
        with pytest.raises(jp.InvalidTransition):
            catalog.request_cancel(other.id, job.organization_id)
        assert not catalog.is_cancel_requested(other.id)
    with pytest.raises(jp.RunNotFound):
        catalog.request_cancel("us_jr_missing")


# --------------------------------------------------------------------------- progress


def _check_progress_invariants(run_id: str, floor: int) -> int:
    run = catalog.get_run(run_id)
    steps = catalog.list_workflow_runs(run_id)
    assert all(0 <= s.processed <= s.parts for s in steps), steps
    assert run.parts == sum(s.parts for s in steps)
    assert run.processed == sum(s.processed for s in steps)
    assert 0 <= run.processed <= run.parts
    assert floor <= run.progress <= 99, (floor, run.progress)
    return run.progress


def test_report_progress_keeps_its_invariants() -> None:
    run = planned_run(make_job("progress", "test.noop", "test.noop"), "test.noop", "test.noop")
    first, second = catalog.list_workflow_runs(run.id)

    r = catalog.report_progress(first.id, parts=10)
    assert (r.parts, r.processed, r.progress) == (11, 0, 0)
    r = catalog.report_progress(first.id, advance=4, info="four")
    assert (r.parts, r.processed, r.progress, r.info) == (11, 4, 36, "four")
    # More parts declared: the share done drops, the reported progress does not.
    r = catalog.report_progress(first.id, parts=30)
    assert (r.parts, r.processed, r.progress) == (31, 4, 36)
    # Fewer parts than already processed: the step keeps what it processed.
    r = catalog.report_progress(first.id, parts=2)
    assert (r.parts, r.processed, r.progress) == (5, 4, 80)
    assert _step(run.id).parts == 4
    r = catalog.report_progress(first.id, parts=10)
    # Advancing beyond the parts is capped at the parts; a negative advance counts nothing.
    r = catalog.report_progress(first.id, advance=50)
    assert (r.parts, r.processed, r.progress) == (11, 10, 90)
    assert (_step(run.id).processed, _step(run.id).parts) == (10, 10)
    r = catalog.report_progress(first.id, advance=-5, emit=False)
    assert (r.processed, r.progress) == (10, 90)
    # A fraction is clamped to 0..1 and progress stays below 100 until the run completes.
    r = catalog.report_progress(second.id, fraction=7.0)
    assert (r.processed, r.progress) == (10, 99)
    r = catalog.report_progress(second.id, fraction=-1.0, emit=False)
    assert r.progress == 99
    _check_progress_invariants(run.id, 99)

    updates = [e for e in _events(run_id=run.id) if e.topic == "job:updated"]
    assert len(updates) == 7
    assert _payload(updates[1])["workflow"] == {
        "id": "test.noop",
        "position": 0,
        "status": "PENDING",
        "parts": 10,
        "processed": 4,
    }
    assert [_payload(u)["progress"] for u in updates] == [0, 36, 36, 80, 80, 90, 99]
    silent = catalog.report_progress(first.id, info="quiet", emit=False)
    assert silent.info == "quiet"
    assert len(_events(run_id=run.id)) == len(updates)

    # Finishing the last step counts all its parts; completing the run reaches 100.
    catalog.finish_workflow_run(first.id, WorkflowRunStatus.COMPLETED)
    r = catalog.finish_workflow_run(second.id, WorkflowRunStatus.COMPLETED)
    assert (r.parts, r.processed) == (11, 11)
    r = catalog.observe_state(run.id, StateType.COMPLETED, "Completed")
    assert (r.parts, r.processed, r.progress) == (11, 11, 100)


def test_a_progress_report_that_changes_nothing_emits_no_update() -> None:
    """`job:updated` means parts, processed, progress or info changed (README, translation)."""
    run = planned_run(make_job("idle"))
    step = _step(run.id)
    catalog.report_progress(step.id, parts=10)
    catalog.report_progress(step.id, advance=4, info="four")
    before = _events(run_id=run.id)
    assert _topics(before) == ["job:updated", "job:updated"]

    catalog.report_progress(step.id, advance=-5)
    catalog.report_progress(step.id, parts=10)
    catalog.report_progress(step.id, fraction=0.0)
    catalog.report_progress(step.id, info="four")

    stored = catalog.get_run(run.id)
    assert (stored.parts, stored.processed, stored.progress, stored.info) == (10, 4, 40, "four")
    assert [e.id for e in _events(run_id=run.id)] == [e.id for e in before]


def test_random_progress_reports_never_break_the_invariants() -> None:
    run = planned_run(make_job("fuzz", "test.noop", "test.noop"), "test.noop", "test.noop")
    steps = catalog.list_workflow_runs(run.id)
    rng = random.Random(7)
    floor = 0
    for _ in range(40):
        step = rng.choice(steps)
        kind = rng.choice(["parts", "advance", "fraction"])
        if kind == "parts":
            catalog.report_progress(step.id, parts=rng.randint(-2, 30), emit=False)
        elif kind == "advance":
            catalog.report_progress(step.id, advance=rng.randint(-3, 12), emit=False)
        else:
            catalog.report_progress(step.id, fraction=rng.uniform(-0.5, 1.5), emit=False)
        floor = _check_progress_invariants(run.id, floor)


def test_concurrent_progress_reports_lose_nothing() -> None:
    """4 writers x 25 `advance=1` on one step of 100 parts: every part counted exactly once."""
    run = planned_run(make_job("race"))
    step = _step(run.id)
    catalog.report_progress(step.id, parts=100)
    start = threading.Barrier(4)

    def writer(_: int) -> None:
        start.wait()
        for _ in range(25):
            catalog.report_progress(step.id, advance=1)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(writer, range(4)))

    final = catalog.get_run(run.id)
    assert (final.parts, final.processed, final.progress) == (100, 100, 99)
    assert (_step(run.id).parts, _step(run.id).processed) == (100, 100)
    events = _events(run_id=run.id)
    assert len(events) == 101
    assert sorted(e.sequence for e in events) == list(range(1, 102))
    assert sorted(_payload(e)["processed"] for e in events[1:]) == list(range(1, 101))
    assert [e.sequence for e in events] == sorted(e.sequence for e in events)


# --------------------------------------------------------------------------- migrations


def test_migrating_twice_is_harmless(any_catalog_url: str) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    job = make_job("survivor")
    catalog_db = db.get_catalog()
    db.migrate(catalog_db)
    db.migrate(catalog_db)

    config = Config()
    config.set_main_option("script_location", str(db._MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    tables = set(sa.inspect(catalog_db.reader).get_table_names())
    assert {
        "organization",
        "workflow",
        "job",
        "job_version",
        "job_run",
        "workflow_run",
        "event",
        "prefect_jobs_alembic_version",
    } <= tables
    with catalog_db.reader.connect() as conn:
        versions = conn.execute(sa.text("SELECT version_num FROM prefect_jobs_alembic_version"))
        assert [row[0] for row in versions] == [head]
    assert catalog_db.url == any_catalog_url
    assert jp.get_job(job.id).name == "survivor"
    assert {w.id for w in jp.list_workflows()} >= {"test.noop", "test.record"}


def test_status_filters_accept_either_case_and_refuse_unknown_values(catalog_url: str) -> None:
    job = jp.create_job(name="filter", job_config_json={"workflowExecutionOrder": ["test.noop"]})
    assert [j.id for j in jp.list_jobs(status="ready").items] == [job.id]
    assert jp.list_runs(status="failed").total == 0
    for call in (lambda: jp.list_jobs(status="done"), lambda: jp.list_runs(status="done")):
        with pytest.raises(jp.ValidationError) as caught:
            call()
        assert caught.value.field == "status"
