"""``operation.map``, ``operation.delete`` and ``operation.export`` as jobs; operations as
steps of a ``workflowExecutionOrder``; and resume: a canceled extract, retried, holds every
row exactly once."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
from openpyxl import load_workbook

import jobs_plugin as jp
from jobs_plugin import engine
from jobs_plugin.data import api as data
from jobs_plugin.data import formats, store
from jobs_plugin.settings import get_settings
from jobs_plugin.translation import JobStatus
from tests.datastore.conftest import run_operation, upload, values

PEOPLE = [
    {"name": "  Ada ", "born": "10/12/1815", "tier": "G", "score": "90"},
    {"name": "Grace", "born": "09/12/1906", "tier": "s", "score": "x"},
    {"name": "Linus", "born": "not a date", "tier": "B", "score": "70"},
]


def _source_sheet() -> str:
    workbook = data.create_workbook(
        name="Raw",
        sheets=[
            {
                "name": "People",
                "fields": [{"key": k} for k in ("name", "born", "tier", "score")],
            }
        ],
    )
    sheet_id = workbook.sheets[0].id
    data.insert_records(sheet_id, [{k: {"value": v} for k, v in p.items()} for p in PEOPLE])
    return sheet_id


def _typed_sheet() -> str:
    workbook = data.create_workbook(
        name="Clean",
        sheets=[
            {
                "name": "People",
                "fields": [
                    {"key": "fullName", "type": "string"},
                    {"key": "birthday", "type": "date"},
                    {
                        "key": "tier",
                        "type": "enum",
                        "config": {"options": [{"value": "gold"}, {"value": "silver"}]},
                    },
                    {"key": "score", "type": "number"},
                    {"key": "source", "type": "string"},
                ],
            }
        ],
    )
    return workbook.sheets[0].id


def test_map_with_rules_keeps_invalid_rows_with_messages(home: str) -> None:
    source, destination = _source_sheet(), _typed_sheet()
    config = {
        "sourceSheetId": source,
        "destinationSheetId": destination,
        "chunkSize": 2,
        "mappingRules": [
            {
                "sourceField": "name",
                "destinationField": "fullName",
                "transforms": ["trim", "upper"],
            },
            {"sourceField": "born", "destinationField": "birthday", "dateFormat": "%d/%m/%Y"},
            {
                "type": "assign",
                "config": {
                    "sourceField": "tier",
                    "destinationField": "tier",
                    "enumMap": {"g": "gold", "s": "silver"},
                },
            },
            {"sourceField": "score", "destinationField": "score", "transforms": ["cast"]},
            {"type": "constant", "config": {"destinationField": "source", "value": "import"}},
        ],
    }
    run = run_operation("map", source, type="sheet", destination=destination, config=config)
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert (run.parts, run.processed) == (2, 2)
    assert run.outcome is not None and run.outcome["recordCount"] == 3
    assert values(destination) == [
        {
            "fullName": "ADA",
            "birthday": "1815-12-10",
            "tier": "gold",
            "score": 90,
            "source": "import",
        },
        {
            "fullName": "GRACE",
            "birthday": "1906-12-09",
            "tier": "silver",
            "score": "x",
            "source": "import",
        },
        {
            "fullName": "LINUS",
            "birthday": "not a date",
            "tier": "B",
            "score": 70,
            "source": "import",
        },
    ]
    records = data.get_records(destination).records
    assert [r.valid for r in records] == [True, False, False]
    assert not records[1].values["score"].valid
    assert {k for k, c in records[2].values.items() if not c.valid} == {"birthday", "tier"}


def test_map_rejects_unknown_fields_before_writing(home: str) -> None:
    source, destination = _source_sheet(), _typed_sheet()
    config = {"mappingRules": [{"sourceField": "name", "destinationField": "nope"}]}
    run = run_operation("map", source, type="sheet", destination=destination, config=config)
    assert run.status is JobStatus.FAILED
    assert run.outcome is not None and "unknown field 'nope'" in run.outcome["message"]
    assert values(destination) == []


def test_delete_by_filter_search_ids_and_exceptions(home: str) -> None:
    destination = _typed_sheet()
    cells = [
        {"fullName": "a", "score": 1},
        {"fullName": "b", "score": "bad"},
        {"fullName": "c", "score": "worse"},
        {"fullName": "dd", "score": 4},
        {"fullName": "ee", "score": 5},
        {"fullName": "eef", "score": 6},
    ]
    ids = [r.id for r in data.insert_records(destination, cells).records]
    run = run_operation(
        "delete",
        destination,
        type="sheet",
        config={"filter": "error", "exceptions": [ids[2]], "chunkSize": 1},
    )
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert run.outcome is not None and run.outcome["deletedCount"] == 1
    assert [v["fullName"] for v in values(destination)] == ["a", "c", "dd", "ee", "eef"]
    run = run_operation(
        "delete", destination, type="sheet", config={"searchValue": "E", "searchField": "fullName"}
    )
    assert [v["fullName"] for v in values(destination)] == ["a", "c", "dd"]
    run = run_operation("delete", destination, type="sheet", config={"ids": [ids[0]]})
    assert [v["fullName"] for v in values(destination)] == ["c", "dd"]
    workbook_id = data.get_sheet(destination).workbook_id
    run = run_operation("delete", workbook_id, type="workbook", config={})
    assert run.status is JobStatus.COMPLETED and values(destination) == []


def test_export_csv_jsonl_and_xlsx(home: str) -> None:
    sheet_id = _typed_sheet()
    data.insert_records(
        sheet_id,
        [
            {"fullName": "Zed", "score": 3, "tier": "gold", "birthday": "2000-01-31"},
            {"fullName": "Amy, Jr.", "score": 10, "tier": "silver"},
            {"fullName": "Bob", "score": "n/a"},
        ],
    )
    options = {"sortField": "score", "sortDirection": "desc", "filter": "valid"}
    run = run_operation("export", sheet_id, type="sheet", config={"options": options})
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert run.outcome is not None and run.outcome["recordCount"] == 2
    file = data.get_file(run.outcome["fileId"])
    assert (file.name, file.ext, file.mode) == ("Clean - People.csv", "csv", "export")
    raw = data.download_file(file.id)
    assert isinstance(raw, bytes)
    assert list(csv.reader(io.StringIO(raw.decode()))) == [
        ["fullName", "birthday", "tier", "score", "source"],
        ["Amy, Jr.", "", "silver", "10", ""],
        ["Zed", "2000-01-31", "gold", "3", ""],
    ]

    run = run_operation("export", sheet_id, type="sheet", config={"format": "jsonl"})
    assert run.outcome is not None
    raw = data.download_file(run.outcome["fileId"])
    assert isinstance(raw, bytes)
    rows = [json.loads(line) for line in raw.decode().splitlines()]
    assert [r["fullName"] for r in rows] == ["Zed", "Amy, Jr.", "Bob"]
    assert rows[2]["score"] == "n/a"

    workbook_id = data.get_sheet(sheet_id).workbook_id
    data.update_workbook(workbook_id, sheets=[{"name": "Second", "fields": [{"key": "x"}]}])
    second = data.list_sheets(workbook_id)[1].id
    data.insert_records(second, [{"x": {"value": "only"}}])
    run = run_operation("export", workbook_id, type="workbook", config={"format": "xlsx"})
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert run.outcome is not None and len(run.outcome["fileIds"]) == 1
    with data.open_file(run.outcome["fileId"]) as fh:
        book = load_workbook(io.BytesIO(fh.read()), read_only=True)
    assert book.sheetnames == ["People", "Second"]
    assert [list(r) for r in book["Second"].iter_rows(values_only=True)] == [["x"], ["only"]]
    assert len(list(book["People"].iter_rows(values_only=True))) == 4


def test_export_writes_blocks_in_order_when_some_go_the_python_way(home: str) -> None:
    """Blocks are rendered several at once while the next is read; those Arrow cannot
    render (an object in a cell) are written the Python way, in their place: the file is the
    Python writer's, byte for byte, and every block is a counted part."""
    sheet = data.create_workbook(
        name="W", sheets=[{"name": "S", "fields": [{"key": "k"}, {"key": "v"}]}]
    )
    sheet_id = sheet.sheets[0].id
    records = [
        {"k": f"row {i}", "v": {"nested": i} if i % 7 == 3 else f"text, {i}"} for i in range(40)
    ]
    store.insert_records(jp.api.organization_id(), sheet_id, [(r, None) for r in records])
    run = run_operation("export", sheet_id, type="sheet", config={"chunkSize": 3})
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert run.outcome is not None and (run.parts, run.processed) == (14, 14)
    expected = io.StringIO(newline="")
    writer = csv.writer(expected)
    writer.writerow(["k", "v"])
    writer.writerows([formats.csv_cell(r["k"]), formats.csv_cell(r["v"])] for r in records)
    assert data.download_file(run.outcome["fileId"]) == expected.getvalue().encode()


def test_operations_as_steps_of_one_job(home: str) -> None:
    """Extract then export in one job, as ``workflowExecutionOrder`` steps (the export
    reads the sheet the extract made, passed in by id)."""
    workbook = data.create_workbook(name="Target", sheets=[{"name": "Sheet1"}])
    file_id = upload("steps.csv", "k,v\n1,a\n2,b\n")
    job = jp.create_job(
        name="extract and export",
        job_config_json={
            "workflowExecutionOrder": [
                {
                    "workflowId": "operation.extract",
                    "parameters": {"type": "file", "source": file_id, "destination": workbook.id},
                },
                {
                    "workflowId": "operation.export",
                    "parameters": {
                        "type": "workbook",
                        "source": workbook.id,
                        "config": {"format": "csv"},
                    },
                },
            ]
        },
    )
    run = jp.execute(job.id)
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert run.outcome is not None
    raw = data.download_file(run.outcome["fileId"])
    assert raw == b"k,v\r\n1,a\r\n2,b\r\n"


def test_a_canceled_extract_resumes_without_duplicates(
    home: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cancel must land mid-way: progress reported at every chunk, the cancel checked
    # every 20 ms, and enough chunks (500) that the extract cannot end first.
    monkeypatch.setenv("PREFECT_JOBS_PROGRESS_EVENT_SECONDS", "0")
    monkeypatch.setenv("PREFECT_JOBS_CANCEL_POLL_SECONDS", "0.02")
    get_settings.cache_clear()
    rows = 20_000
    content = "n,word\n" + "".join(f"{i},w{i}\n" for i in range(rows))
    file_id = upload("big.csv", content)
    job = jp.create_job(
        name="resumable extract",
        type="file",
        operation="extract",
        source=file_id,
        config={"chunkSize": 40},
    )
    run = jp.execute(job.id, wait=False)
    deadline = time.monotonic() + 60
    while jp.get_run(run.id).processed < 5:
        assert time.monotonic() < deadline, "the extract did not start"
        time.sleep(0.02)
    jp.cancel(run.id)
    engine.wait_for_background(60)
    canceled = jp.get_run(run.id)
    assert canceled.status is JobStatus.CANCELED
    checkpoint = store.get_checkpoint(run.id, 0)
    assert checkpoint is not None and 0 < checkpoint["records"] < rows
    sheet_id = checkpoint["targets"][0]
    # Whole chunks only: what is stored is what the checkpoint counts.
    assert store.count_records(jp.api.organization_id(), sheet_id) == checkpoint["records"]
    assert checkpoint["records"] % 40 == 0

    retried = jp.retry(run.id)
    assert retried.status is JobStatus.COMPLETED, retried.outcome
    assert retried.outcome is not None and retried.outcome["sheetIds"] == [sheet_id]
    assert retried.parts == retried.processed
    numbers = [v["n"] for v in values(sheet_id)]
    assert numbers == list(range(rows))
    assert data.list_workbooks().total == 1
