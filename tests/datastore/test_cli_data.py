"""``prefect-jobs files|workbooks|records``, through typer's CliRunner on the sub-apps."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import typer
from typer.testing import CliRunner

from jobs_plugin.cli_data import files_app, records_app, workbooks_app
from jobs_plugin.data import api as data


def _root() -> typer.Typer:
    """The sub-apps under a root with ``-o``, wired as ``jobs_plugin.cli`` wires them."""
    root = typer.Typer()

    @root.callback()
    def _options(
        ctx: typer.Context, organization: Annotated[str | None, typer.Option("-o")] = None
    ) -> None:
        ctx.obj = SimpleNamespace(organization=organization)

    root.add_typer(files_app, name="files")
    root.add_typer(workbooks_app, name="workbooks")
    root.add_typer(records_app, name="records")
    return root


def test_files_workbooks_and_records_commands(home: str, tmp_path: Path) -> None:
    runner, app = CliRunner(), _root()
    source = tmp_path / "in.csv"
    source.write_bytes(b"a,b\n1,x\n2,y\n")
    uploaded = runner.invoke(app, ["files", "upload", str(source)])
    assert uploaded.exit_code == 0, uploaded.output
    file_id = uploaded.stdout.strip()
    assert file_id.startswith("us_fl_")
    listed = runner.invoke(app, ["files", "list", "--json"])
    assert [f["name"] for f in json.loads(listed.stdout)] == ["in.csv"]
    assert "in.csv" in runner.invoke(app, ["files", "list"]).stdout
    assert json.loads(runner.invoke(app, ["files", "get", file_id, "--json"]).stdout)["size"] == 12
    out = tmp_path / "out.csv"
    assert runner.invoke(app, ["files", "download", file_id, "-O", str(out)]).exit_code == 0
    assert out.read_bytes() == source.read_bytes()
    assert runner.invoke(app, ["files", "delete", file_id]).exit_code == 0
    assert data.list_files().total == 0
    other = runner.invoke(app, ["-o", "other-org", "files", "upload", str(source)])
    assert other.exit_code == 0, other.output
    assert data.list_files().total == 0 and data.list_files(organization="other-org").total == 1

    spec = tmp_path / "wb.json"
    spec.write_text(json.dumps({"name": "W", "sheets": [{"name": "S", "fields": [{"key": "n"}]}]}))
    created = runner.invoke(app, ["workbooks", "create", "-f", str(spec)])
    assert created.exit_code == 0, created.output
    workbook = data.get_workbook(created.stdout.strip())
    sheet_id = workbook.sheets[0].id
    data.insert_records(sheet_id, [{"n": {"value": "first"}}, {"n": {"value": "second"}}])
    shown = runner.invoke(app, ["records", "list", sheet_id, "--search-value", "sec"])
    assert shown.exit_code == 0 and "second" in shown.stdout and "first" not in shown.stdout
    records = json.loads(runner.invoke(app, ["records", "list", sheet_id, "--json"]).stdout)
    assert records["counts"] == {"total": 2, "valid": 2, "error": 0}
    assert "S" in runner.invoke(app, ["workbooks", "get", workbook.id]).stdout
    assert workbook.id in runner.invoke(app, ["workbooks", "list"]).stdout
    assert runner.invoke(app, ["workbooks", "delete", workbook.id]).exit_code == 0
    missing = runner.invoke(app, ["workbooks", "get", workbook.id])
    assert missing.exit_code != 0
