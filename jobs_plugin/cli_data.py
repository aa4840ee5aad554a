"""``prefect-jobs files|workbooks|records``: the data store from the command line.

Typer sub-apps over ``jobs_plugin.data.api``; ``jobs_plugin.cli`` adds them to the root app,
whose ``-o ORGANIZATION`` option they honour. Tables on stdout, ``--json`` for the wire shapes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from jobs_plugin.data import api as data
from jobs_plugin.errors import ValidationError

files_app = typer.Typer(no_args_is_help=True, help="Upload, list, download and delete files.")
workbooks_app = typer.Typer(no_args_is_help=True, help="Workbooks and their sheets.")
records_app = typer.Typer(no_args_is_help=True, help="Records of a sheet.")

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON (camelCase, as the API returns) on stdout.")
]


def organization_of(ctx: typer.Context) -> str | None:
    """The root app's `-o ORGANIZATION`, if given."""
    organization = getattr(ctx.obj, "organization", None)
    return organization if isinstance(organization, str) else None


def _json(value: Any) -> None:
    def plain(item: Any) -> Any:
        if isinstance(item, BaseModel):
            return item.model_dump(by_alias=True, mode="json")
        return item

    payload = [plain(v) for v in value] if isinstance(value, list) else plain(value)
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    Console().print(table)


# --------------------------------------------------------------------------- files


@files_app.command("upload")
def upload(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    name: Annotated[str | None, typer.Option(help="Name to store (default: the file's).")] = None,
    space_id: Annotated[str | None, typer.Option("--space-id")] = None,
    environment_id: Annotated[str | None, typer.Option("--environment-id")] = None,
    mode: Annotated[str, typer.Option(help="import or export.")] = "import",
    as_json: JsonOption = False,
) -> None:
    """Store a file; prints its id."""
    file = data.upload_file(
        path,
        name=name,
        space_id=space_id,
        environment_id=environment_id,
        mode=mode,
        organization=organization_of(ctx),
    )
    if as_json:
        _json(file)
    else:
        typer.echo(file.id)


@files_app.command("list")
def list_files(
    ctx: typer.Context,
    page: Annotated[int, typer.Option(min=1)] = 1,
    page_size: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonOption = False,
) -> None:
    files = data.list_files(
        page_number=page, page_size=page_size, organization=organization_of(ctx)
    )
    if as_json:
        _json(files.items)
        return
    _table(
        f"files (page {files.page_number} of {files.page_count}, {files.total} in all)",
        ["id", "name", "size", "mode", "status", "workbook", "created"],
        [
            [f.id, f.name, f.size, f.mode, f.status, f.workbook_id, f.created_at.isoformat()]
            for f in files.items
        ],
    )


@files_app.command("get")
def get_file(ctx: typer.Context, file_id: str, as_json: JsonOption = False) -> None:
    file = data.get_file(file_id, organization=organization_of(ctx))
    if as_json:
        _json(file)
        return
    _table(file.id, ["field", "value"], [[k, v] for k, v in file.model_dump().items()])


@files_app.command("download")
def download(
    ctx: typer.Context,
    file_id: str,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-O",
            help="File or folder to write (default: its name here; '-' for stdout).",
        ),
    ] = None,
) -> None:
    """Write a file's bytes to disk (or stdout with ``-O -``)."""
    if output is not None and str(output) == "-":
        for block in data.iter_file(file_id, organization=organization_of(ctx)):
            sys.stdout.buffer.write(block)
        sys.stdout.buffer.flush()
        return
    target = data.download_file(file_id, output or Path.cwd(), organization=organization_of(ctx))
    typer.echo(str(target))


@files_app.command("delete")
def delete_file(ctx: typer.Context, file_id: str) -> None:
    data.delete_file(file_id, organization=organization_of(ctx))
    typer.echo(f"deleted {file_id}")


# --------------------------------------------------------------------------- workbooks


@workbooks_app.command("create")
def create_workbook(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Workbook JSON ({name, sheets: [...]}); '-' for stdin."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name (overrides the file's).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a workbook from JSON (Flatfile's shape: name, sheets with fields); prints its id."""
    spec: dict[str, Any] = {}
    if file is not None:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError("file", f"not JSON: {exc}") from exc
        if not isinstance(spec, dict):
            raise ValidationError("file", "must hold a JSON object")
    if name:
        spec["name"] = name
    workbook = data.create_workbook(spec, organization=organization_of(ctx))
    if as_json:
        _json(workbook)
    else:
        typer.echo(workbook.id)


@workbooks_app.command("list")
def list_workbooks(
    ctx: typer.Context,
    page: Annotated[int, typer.Option(min=1)] = 1,
    page_size: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonOption = False,
) -> None:
    workbooks = data.list_workbooks(
        page_number=page, page_size=page_size, organization=organization_of(ctx)
    )
    if as_json:
        _json(workbooks.items)
        return
    _table(
        f"workbooks (page {workbooks.page_number} of {workbooks.page_count}, "
        f"{workbooks.total} in all)",
        ["id", "name", "sheets", "created"],
        [
            [w.id, w.name, ", ".join(f"{s.name} ({s.id})" for s in w.sheets), w.created_at]
            for w in workbooks.items
        ],
    )


@workbooks_app.command("get")
def get_workbook(ctx: typer.Context, workbook_id: str, as_json: JsonOption = False) -> None:
    workbook = data.get_workbook(workbook_id, organization=organization_of(ctx))
    if as_json:
        _json(workbook)
        return
    sheets = [data.get_sheet(s.id, organization=organization_of(ctx)) for s in workbook.sheets]
    _table(
        f"{workbook.name} ({workbook.id})",
        ["sheet", "name", "fields", "records", "valid", "errors"],
        [
            [
                s.id,
                s.name,
                ", ".join(f"{f['key']}:{f.get('type', 'string')}" for f in s.config["fields"]),
                *(
                    [s.record_counts.total, s.record_counts.valid, s.record_counts.error]
                    if s.record_counts
                    else ["", "", ""]
                ),
            ]
            for s in sheets
        ],
    )


@workbooks_app.command("delete")
def delete_workbook(ctx: typer.Context, workbook_id: str) -> None:
    data.delete_workbook(workbook_id, organization=organization_of(ctx))
    typer.echo(f"deleted {workbook_id}")


# --------------------------------------------------------------------------- records


@records_app.command("list")
def list_records(
    ctx: typer.Context,
    sheet_id: str,
    page: Annotated[int, typer.Option(min=1)] = 1,
    page_size: Annotated[int, typer.Option(min=1, max=data.MAX_PAGE_SIZE)] = 50,
    filter: Annotated[str, typer.Option(help="valid, error or all.")] = "all",
    filter_field: Annotated[str | None, typer.Option(help="Only errors of this field.")] = None,
    search_value: Annotated[str | None, typer.Option()] = None,
    search_field: Annotated[str | None, typer.Option()] = None,
    sort_field: Annotated[str | None, typer.Option()] = None,
    sort_direction: Annotated[str, typer.Option(help="asc or desc.")] = "asc",
    as_json: JsonOption = False,
) -> None:
    """A page of a sheet's records; invalid cells are marked with ``!``."""
    result = data.get_records(
        sheet_id,
        page_number=page,
        page_size=page_size,
        filter=filter,
        filter_field=filter_field,
        search_value=search_value,
        search_field=search_field,
        sort_field=sort_field,
        sort_direction=sort_direction,
        include_counts=True,
        organization=organization_of(ctx),
    )
    if as_json:
        _json(result)
        return
    sheet = data.get_sheet(sheet_id, include_counts=False, organization=organization_of(ctx))
    keys = [f["key"] for f in sheet.config["fields"]]
    counts = result.counts
    title = f"{sheet.name}: {result.total} matching"
    if counts is not None:
        title += f" ({counts.total} records, {counts.error} with errors)"
    rows = []
    for record in result.records:
        cells = []
        for key in keys:
            cell = record.values.get(key)
            shown = "" if cell is None or cell.value is None else str(cell.value)
            cells.append(shown + ("!" if cell is not None and cell.valid is False else ""))
        rows.append([record.id, *cells])
    _table(title, ["id", *keys], rows)
