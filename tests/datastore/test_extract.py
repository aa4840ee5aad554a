"""``operation.extract``: CSV/TSV (header and encoding detection), JSON, JSON Lines and XLSX
into workbooks, with inferred field types, cell messages for bad cells, and FAILED runs
naming the line for unreadable files (and nothing left behind)."""

from __future__ import annotations

import json

import pytest

import jobs_plugin as jp
from jobs_plugin.data import api as data
from jobs_plugin.data import store
from jobs_plugin.translation import JobStatus
from tests.datastore.conftest import DATA, run_operation, upload, values


def _extract(file_id: str, **kwargs: object) -> tuple[jp.JobRunPublic, list[str]]:
    run = run_operation("extract", file_id, type="file", **kwargs)  # type: ignore[arg-type]
    sheet_ids = list((run.outcome or {}).get("sheetIds") or [])
    return run, sheet_ids


def test_csv_with_header_types_and_outcome(home: str) -> None:
    file_id = upload(
        "people.csv",
        "Name,Age,Member,Joined\nAda,36,yes,2024-01-02\nGrace,45,no,2023-12-31\n",
    )
    run, [sheet_id] = _extract(file_id)
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert run.outcome is not None and run.outcome["recordCount"] == 2
    assert (run.parts, run.processed, run.progress) == (1, 1, 100)
    workbook = data.get_workbook(run.outcome["workbookId"])
    assert workbook.name == "people"
    fields = workbook.sheets[0].config["fields"]
    assert [(f["key"], f["label"], f["type"]) for f in fields] == [
        ("name", "Name", "string"),
        ("age", "Age", "number"),
        ("member", "Member", "boolean"),
        ("joined", "Joined", "date"),
    ]
    assert values(sheet_id) == [
        {"name": "Ada", "age": 36, "member": True, "joined": "2024-01-02"},
        {"name": "Grace", "age": 45, "member": False, "joined": "2023-12-31"},
    ]
    assert data.get_file(file_id).workbook_id == workbook.id


def test_bom_semicolons_quoted_newlines_and_empty_lines(home: str) -> None:
    content = (
        "\ufeffid;note;amount\r\n"
        '1;"two\nlines; and a semicolon";1,5\r\n'
        "\r\n"
        "\r\n"
        '2;"say ""hi""";3\r\n'
    )
    run, [sheet_id] = _extract(upload("notes.csv", content.encode("utf-8")))
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert values(sheet_id) == [
        {"id": 1, "note": "two\nlines; and a semicolon", "amount": "1,5"},
        {"id": 2, "note": 'say "hi"', "amount": "3"},
    ]


def test_latin1_file_is_decoded(home: str) -> None:
    content = "ville,pays\nMontréal,Canada\nZürich,Suisse\n".encode("latin-1")
    run, [sheet_id] = _extract(upload("villes.csv", content))
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert [v["ville"] for v in values(sheet_id)] == ["Montréal", "Zürich"]


def test_tsv_and_headerless_file(home: str) -> None:
    run, [sheet_id] = _extract(upload("plain.tsv", "1\t2.5\tx\n3\t4\ty\n"))
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert values(sheet_id) == [
        {"column_1": 1, "column_2": 2.5, "column_3": "x"},
        {"column_1": 3, "column_2": 4, "column_3": "y"},
    ]


def test_one_row_and_zero_row_files(home: str) -> None:
    run, [sheet_id] = _extract(upload("one.csv", "a,b\n1,2\n"))
    assert run.status is JobStatus.COMPLETED
    assert values(sheet_id) == [{"a": 1, "b": 2}]
    run, [sheet_id] = _extract(upload("header-only.csv", "a,b\n"))
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert values(sheet_id) == []
    assert [f["key"] for f in data.get_sheet(sheet_id).config["fields"]] == ["a", "b"]


def test_ragged_rows_become_cell_messages(home: str) -> None:
    file_id = upload("ragged.csv", "a,b,c\n1,2,3\n4,5\n6,7,8,9\n")
    run, [sheet_id] = _extract(file_id)
    assert run.status is JobStatus.COMPLETED, run.outcome
    page = data.get_records(sheet_id, include_counts=True)
    assert page.counts is not None and (page.counts.valid, page.counts.error) == (1, 2)
    short, long = page.records[1], page.records[2]
    assert short.values["c"].value is None
    assert (
        short.values["c"].messages
        and "line 3 has 2 values" in short.values["c"].messages[0].message
    )
    assert long.values["c"].messages and "extra values: '9'" in long.values["c"].messages[0].message
    errors = data.get_records(sheet_id, filter="error", filter_field="c")
    assert [r.id for r in errors.records] == [short.id, long.id]


def test_into_an_existing_workbook_validates_against_its_fields(home: str) -> None:
    workbook = data.create_workbook(
        name="Contacts",
        sheets=[
            {
                "name": "Contacts",
                "fields": [
                    {"key": "email", "type": "string", "constraints": [{"type": "required"}]},
                    {"key": "age", "label": "Age", "type": "number"},
                    {
                        "key": "tier",
                        "type": "enum",
                        "config": {"options": [{"value": "gold"}, {"value": "silver"}]},
                    },
                ],
            }
        ],
    )
    file_id = upload("contacts.csv", "email,Age,tier\na@x.io,30,gold\n,abc,bronze\n")
    run, [sheet_id] = _extract(file_id, destination=workbook.id)
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert sheet_id == workbook.sheets[0].id
    good, bad = data.get_records(sheet_id).records
    assert good.valid and good.values["age"].value == 30
    assert not bad.valid
    assert bad.values["age"].value == "abc" and not bad.values["age"].valid
    assert bad.values["email"].messages and bad.values["email"].messages[0].message == "is required"
    assert (
        bad.values["tier"].messages and "must be one of" in bad.values["tier"].messages[0].message
    )


def test_json_and_json_lines(home: str) -> None:
    items = [{"sku": "A-1", "qty": 3, "tags": ["x"]}, {"sku": "B-2", "qty": 4.5, "extra": True}]
    run, [sheet_id] = _extract(upload("items.json", json.dumps(items, indent=2)))
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert values(sheet_id) == [
        {"sku": "A-1", "qty": 3, "tags": '["x"]', "extra": None},
        {"sku": "B-2", "qty": 4.5, "tags": None, "extra": True},
    ]
    lines = "\n".join(json.dumps(i) for i in items) + "\n\n"
    run, [sheet_id] = _extract(upload("items.jsonl", lines))
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert [v["sku"] for v in values(sheet_id)] == ["A-1", "B-2"]


def test_xlsx_with_two_worksheets(home: str) -> None:
    run, sheet_ids = _extract(data.upload_file(DATA / "two_sheets.xlsx").id)
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert len(sheet_ids) == 2
    sheets = data.list_sheets(run.outcome["workbookId"])  # type: ignore[index]
    assert [s.name for s in sheets] == ["Customers", "Orders"]
    assert values(sheet_ids[0]) == [
        {"id": 1, "name": "Ada", "since": "2024-01-02"},
        {"id": 2, "name": "Grace", "since": "2023-05-06"},
    ]
    assert values(sheet_ids[1]) == [{"order": "O-1", "customer": 1, "total": 9.5}]


def test_chunks_are_parts(home: str) -> None:
    rows = "".join(f"{i},name {i}\n" for i in range(25))
    run, [sheet_id] = _extract(upload("n.csv", "n,name\n" + rows), config={"chunkSize": 10})
    assert run.status is JobStatus.COMPLETED, run.outcome
    assert (run.parts, run.processed) == (3, 3)
    assert [v["n"] for v in values(sheet_id)] == list(range(25))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "line 1: the file is empty"),
        ("bad-quote.csv", b'a,b\n1,2\n3,"x"y\n', "line 3: malformed CSV"),
        ("bad.jsonl", b'{"a": 1}\n{"a": 2\n', "line 2: invalid JSON"),
        ("bad.json", b'[{"a": 1}, 7]', "item 2: expected a JSON object"),
        ("bad.xlsx", b"not a zip", "not a readable XLSX file"),
    ],
)
def test_unreadable_files_fail_with_line_and_leave_nothing(
    home: str, name: str, content: bytes, message: str
) -> None:
    run, _ = _extract(upload(name, content))
    assert run.status is JobStatus.FAILED
    assert run.outcome is not None and message in run.outcome["message"], run.outcome
    assert data.list_workbooks().total == 0


def test_bad_encoding_late_in_the_file_takes_back_committed_chunks(home: str) -> None:
    """The first 64 KiB decode as UTF-8, so the file is read as UTF-8 until a Latin-1 byte."""
    good = "".join(f"{i},okokokok\n" for i in range(8000)).encode()
    assert len(good) > 65536
    content = b"n,text\n" + good + b"99,caf\xe9\n"
    run, _ = _extract(upload("late.csv", content), config={"chunkSize": 1000})
    assert run.status is JobStatus.FAILED
    assert run.outcome is not None and "line 8002" in run.outcome["message"], run.outcome
    assert "utf-8" in run.outcome["message"]
    assert data.list_workbooks().total == 0
    with store.get_store().reader.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM data_record").scalar() == 0


def test_unknown_file_fails_the_run(home: str) -> None:
    run, _ = _extract("us_fl_doesnotexist")
    assert run.status is JobStatus.FAILED
    assert run.outcome is not None and "not found" in run.outcome["message"]
