"""``prefect-jobs``: the command line, a thin typer + rich shell over the Python API.

Every command calls ``jobs_plugin``'s public functions and renders what they return; the CLI
adds no business logic. Conventions:

* tables go to stdout, live progress to stderr; ``--json`` prints camelCase JSON on stdout;
* a ``JobsError`` or a bad option ends with one line ``error: ...`` on stderr and exit code 2
  (bad input) or 1 (anything else); no traceback;
* commands that wait on a run exit 0 when it COMPLETED and 1 when it FAILED or was CANCELED.

Runs started here (``jobs execute``, ``jobs retry``, ``jobs create --trigger immediate``,
``demo``) execute inside this process, so the process stays until the run ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from prefect.logging.handlers import PrefectConsoleHandler
from pydantic_core import to_jsonable_python
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text
from typer.core import TyperGroup

import jobs_plugin as jp
from jobs_plugin import engine
from jobs_plugin.cli_data import files_app, records_app, workbooks_app
from jobs_plugin.cli_schedules import schedules_add, schedules_app
from jobs_plugin.errors import InvalidTransition, JobsError, ValidationError
from jobs_plugin.models import (
    EventPublic,
    Isolation,
    JobPublic,
    JobRunPublic,
    JobType,
    JobVersionPublic,
    Operation,
    Page,
    StepSpec,
    Trigger,
    WorkflowPublic,
    WorkflowRunPublic,
)
from jobs_plugin.settings import get_settings
from jobs_plugin.translation import JobStatus, Topic, WorkflowRunStatus

POLL_SECONDS = 0.2
"""How often a waiting command reads the run back."""

# --------------------------------------------------------------------------- the application


class _Cli(TyperGroup):
    """The root group: turns domain and usage errors into one ``error:`` line on stderr."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.TyperException as exc:  # typer's usage errors: bad option, missing argument
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help was printed already
                sys.exit(2)
            _fail(exc.format_message(), exc.exit_code)
        except typer.Abort:
            _fail("aborted", 1)
        except JobsError as exc:
            _fail(str(exc), 2 if isinstance(exc, ValidationError) else 1)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(code)


app = typer.Typer(
    cls=_Cli,
    name="prefect-jobs",
    help="Jobs: ordered lists of workflows (Prefect flows), run in sequence in isolation.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
jobs_app = typer.Typer(no_args_is_help=True, help="Create, change, run and inspect jobs.")
runs_app = typer.Typer(no_args_is_help=True, help="Inspect and follow job runs.")
workflows_app = typer.Typer(no_args_is_help=True, help="The workflows jobs can run.")
events_app = typer.Typer(no_args_is_help=True, help="The job and run lifecycle events.")
app.add_typer(jobs_app, name="jobs")
app.add_typer(runs_app, name="runs")
app.add_typer(workflows_app, name="workflows")
app.add_typer(schedules_app, name="schedules")
jobs_app.command("schedule", help="Add a schedule to a job (same as `schedules add`).")(
    schedules_add
)
app.add_typer(events_app, name="events")


@dataclass(frozen=True)
class _State:
    organization: str | None = None


@app.callback()
def _root(
    ctx: typer.Context,
    organization: Annotated[
        str | None,
        typer.Option(
            "--organization",
            "-o",
            metavar="NAME",
            help="Organization to act in (default: the settings' default organization).",
        ),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show Prefect's INFO logs too (the Prefect API gets them anyway).",
        ),
    ] = False,
) -> None:
    ctx.obj = _State(organization)
    if not verbose:  # workflow processes configure their logging from the environment
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.setLevel(logging.NOTSET if verbose else logging.WARNING)


def _org(ctx: typer.Context) -> str | None:
    return ctx.obj.organization if isinstance(ctx.obj, _State) else None


def main() -> None:
    """Entry point of the ``prefect-jobs`` console script."""
    with _embedded_prefect():
        app()


@contextmanager
def _embedded_prefect() -> Iterator[None]:
    """With no Prefect API configured, Prefect starts a temporary local server for the run:
    keep its SQLite database under our home folder (unless ``PREFECT_HOME`` is set) and give a
    cold start the time it takes on a small machine."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        get_current_settings,
        temporary_settings,
    )

    from jobs_plugin import stack

    current = get_current_settings()
    if current.api.url:
        yield
        return
    running = stack.running_api_url(get_settings().home_path)
    if running:  # `prefect-jobs up` serves this home: use its server, never a second one
        with temporary_settings(updates={PREFECT_API_URL: running}):
            yield
        return
    updates: dict[Any, Any] = {
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: max(
            current.server.ephemeral.startup_timeout_seconds, 120
        ),
    }
    # The temporary server runs in a subprocess that inherits the environment: no telemetry
    # look-ups from an offline laptop.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if "PREFECT_HOME" not in os.environ:
        updates[PREFECT_HOME] = get_settings().home_path / "prefect"
    with temporary_settings(updates=updates):
        yield


# --------------------------------------------------------------------------- JSON input


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON ({exc})") from exc


def _json_object(text: str) -> dict[str, Any]:
    value = _json_value(text)
    if not isinstance(value, dict):
        raise typer.BadParameter("expected a JSON object")
    return value


def _json_file(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror or exc}") from exc
    return _json_object(text)


# --------------------------------------------------------------------------- shared options

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print JSON (camelCase, as the API returns) on stdout.")
]
JobIdArg = Annotated[str, typer.Argument(metavar="JOB_ID", help="Id of the job.")]
RunIdArg = Annotated[str, typer.Argument(metavar="RUN_ID", help="Id of the job run.")]
WaitFlag = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help=(
            "--wait shows live progress until the run ends. The run executes inside this "
            "process, so --no-wait cannot detach: it prints the run id at once and then waits "
            "quietly, without the live display."
        ),
    ),
]
PageOpt = Annotated[int, typer.Option("--page", min=1, help="Page number, from 1.")]
PageSizeOpt = Annotated[int, typer.Option("--page-size", min=1, max=1000, help="Items per page.")]
JobFilterOpt = Annotated[
    str | None, typer.Option("--job", metavar="JOB_ID", help="Only for this job.")
]
StatusOpt = Annotated[
    JobStatus | None,
    typer.Option("--status", case_sensitive=False, help="Only this status."),
]
# What a job is made of (create and update).
FileOpt = Annotated[
    dict[str, Any] | None,
    typer.Option(
        "--file",
        "-f",
        parser=_json_file,
        metavar="PATH",
        help="A JobCreate-shaped JSON file (camelCase); '-' reads stdin. Options override it.",
    ),
]
NameOpt = Annotated[str | None, typer.Option("--name", help="Job name.")]
SourceProviderOpt = Annotated[
    str | None, typer.Option("--source-provider", help="Source provider.")
]
WorkflowOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--workflow",
        "-w",
        metavar="ID",
        help="A workflow to run, repeatable, in order (the workflowExecutionOrder).",
    ),
]
StepOpt = Annotated[
    list[Any] | None,
    typer.Option(
        "--step",
        parser=_json_value,
        metavar="JSON",
        help=(
            'A step as JSON, repeatable, in order, e.g. \'{"workflowId": "x", "parameters": '
            "{...}}'. Use either --step or --workflow."
        ),
    ),
]
TypeOpt = Annotated[JobType | None, typer.Option("--type", help="Job type.")]
OperationOpt = Annotated[Operation | None, typer.Option("--operation", help="Operation.")]
SourceOpt = Annotated[str | None, typer.Option("--source", help="Source.")]
DestinationOpt = Annotated[str | None, typer.Option("--destination", help="Destination.")]
ConfigOpt = Annotated[
    dict[str, Any] | None,
    typer.Option(
        "--config",
        parser=_json_object,
        metavar="JSON",
        help="The job's config object.",
    ),
]
TriggerOpt = Annotated[
    Trigger | None,
    typer.Option("--trigger", help="manual, or immediate: run on create."),
]


def _job_fields(
    file: dict[str, Any] | None,
    *,
    name: str | None,
    source_provider: str | None,
    workflows: list[str] | None,
    steps: list[Any] | None,
    type: JobType | None,
    operation: Operation | None,
    source: str | None,
    destination: str | None,
    config: dict[str, Any] | None,
    trigger: Trigger | None,
    current_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JobCreate/JobUpdate body: the file's fields overridden by the options given."""
    if workflows and steps:
        raise typer.BadParameter(
            "use --workflow or --step, not both (their relative order would be lost)",
            param_hint="'--workflow' / '--step'",
        )
    data = dict(file or {})
    options = {
        "name": name,
        "sourceProvider": source_provider,
        "type": type,
        "operation": operation,
        "source": source,
        "destination": destination,
        "config": config,
        "trigger": trigger,
    }
    data.update({key: value for key, value in options.items() if value is not None})
    order = workflows or steps
    if order:
        given = data.pop("jobConfigJson", None) or data.pop("job_config_json", None)
        base = given if isinstance(given, dict) else current_config or {}
        data["jobConfigJson"] = {**base, "workflowExecutionOrder": order}
    return data


# --------------------------------------------------------------------------- output


def _console(stderr: bool = False) -> Console:
    """A console on the current stdout/stderr; wide when not a terminal, so pipes keep ids."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and console.width < 200:
        console = Console(stderr=stderr, highlight=False, width=200)
    return console


def _show(as_json: bool, value: Any, *renderables: RenderableType) -> None:
    """``value`` as JSON (camelCase) with ``--json``, else the tables rendering it."""
    if as_json:
        typer.echo(json.dumps(to_jsonable_python(value, by_alias=True), indent=2))
    else:
        _console().print(*renderables)


def _text(value: Any) -> Text:
    """A table cell as plain text (never markup); '-' for nothing."""
    if isinstance(value, Text):
        return value
    if value is None or value == "" or value == {}:
        return Text("-", style="dim")
    if isinstance(value, datetime):
        return Text(value.astimezone().strftime("%Y-%m-%d %H:%M:%S"))
    if isinstance(value, Enum):
        return Text(str(value.value))
    if isinstance(value, dict | list):
        return Text(json.dumps(value, ensure_ascii=False))
    return Text(str(value))


_STATUS_STYLES = {
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELED": "yellow",
    "EXECUTING": "cyan",
    "RUNNING": "cyan",
    "NOT_RUN": "dim",
}


def _status(status: Enum) -> Text:
    return Text(str(status.value), style=_STATUS_STYLES.get(str(status.value), ""))


def _fraction(processed: int, parts: int) -> str:
    return f"{processed}/{parts}"


def _table(
    columns: str,
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    caption: str | None = None,
) -> Table:
    """A table with ``columns`` (comma-separated headers) and a row per item of ``rows``."""
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for column in columns.split(","):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*map(_text, row))
    return table


def _details(rows: Sequence[tuple[str, Any]]) -> Table:
    """A two-column key/value table of one object."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, _text(value))
    return table


def _page_caption(page: Page[Any]) -> str:
    return f"page {page.page_number} of {page.page_count} · {page.total} in total"


def _job_tables(job: JobPublic) -> tuple[Table, Table]:
    details = _details(
        [
            ("id", job.id),
            ("name", job.name),
            ("status", _status(job.status)),
            ("version", job.version),
            ("trigger", job.trigger),
            ("type", job.type),
            ("operation", job.operation),
            ("sourceProvider", job.source_provider),
            ("source", job.source),
            ("destination", job.destination),
            ("config", job.config),
            ("lastRunId", job.last_run_id),
            ("createdAt", job.created_at),
            ("updatedAt", job.updated_at),
        ]
    )
    steps = (
        (i, s.workflow_id, s.parameters, _overrides(s))
        for i, s in enumerate(job.job_config_json.workflow_execution_order)
    )
    return details, _table("#,workflow,parameters,overrides", steps, title="workflows")


def _overrides(step: StepSpec) -> dict[str, Any]:
    """A step's own settings (isolation, retries...): its wire form less id and parameters."""
    wire = step.model_dump(mode="json", by_alias=True)  # a bare id when it has none
    if not isinstance(wire, dict):
        return {}
    return {k: v for k, v in wire.items() if k not in ("workflowId", "parameters")}


def _jobs_table(page: Page[JobPublic]) -> Table:
    rows = (
        (j.id, j.name, _status(j.status), j.version, j.trigger, j.updated_at) for j in page.items
    )
    return _table("id,name,status,version,trigger,updatedAt", rows, caption=_page_caption(page))


def _run_tables(run: JobRunPublic) -> tuple[Table, Table]:
    details = _details(
        [
            ("run", run.id),
            ("job", run.job_id),
            ("status", _status(run.status)),
            ("processed/parts", _fraction(run.processed, run.parts)),
            ("progress", f"{run.progress}%"),
            ("info", run.info),
            ("outcome", (run.outcome or {}).get("message")),
            ("attempt", run.attempt),
            ("retryOf", run.retry_of),
            ("jobVersion", run.job_version),
            ("prefectFlowRunId", run.prefect_flow_run_id),
            ("prefectUrl", run.prefect_url),
            ("createdAt", run.created_at),
            ("startedAt", run.started_at),
            ("finishedAt", run.finished_at),
        ]
    )
    steps = (
        (
            s.position,
            s.workflow_id,
            _status(s.status),
            _fraction(s.processed, s.parts),
            s.prefect_flow_run_id,
            s.error,
        )
        for s in run.workflow_runs
    )
    columns = "#,workflow,status,processed/parts,prefect flow run,error"
    return details, _table(columns, steps, title="workflow runs")


def _runs_table(page: Page[JobRunPublic]) -> Table:
    rows = (
        (
            r.id,
            r.job_id,
            _status(r.status),
            r.attempt,
            _fraction(r.processed, r.parts),
            f"{r.progress}%",
            r.created_at,
            r.finished_at,
        )
        for r in page.items
    )
    columns = "id,job,status,attempt,processed/parts,progress,createdAt,finishedAt"
    return _table(columns, rows, caption=_page_caption(page))


def _scope(wf: WorkflowPublic) -> str:
    return "builtin" if wf.organization_id is None else "organization"


def _workflows_table(workflows: Sequence[WorkflowPublic]) -> Table:
    rows = (
        (w.id, w.name, _scope(w), w.isolation, w.retries, w.timeout_seconds, w.entrypoint)
        for w in workflows
    )
    return _table("id,name,scope,isolation,retries,timeoutSeconds,entrypoint", rows)


def _workflow_details(wf: WorkflowPublic) -> Table:
    schema = wf.parameter_schema or {}
    required = set(schema.get("required", []))
    params = ", ".join(f"{p}{'' if p in required else '?'}" for p in schema.get("properties", {}))
    return _details(
        [
            ("id", wf.id),
            ("name", wf.name),
            ("description", wf.description),
            ("entrypoint", wf.entrypoint),
            ("scope", _scope(wf)),
            ("isolation", wf.isolation),
            ("retries", wf.retries),
            ("retryDelaySeconds", wf.retry_delay_seconds),
            ("timeoutSeconds", wf.timeout_seconds),
            ("parameters", params),
            ("updatedAt", wf.updated_at),
        ]
    )


def _events_table(events: Sequence[EventPublic], limit: int) -> Table:
    def row(e: EventPublic) -> tuple[Any, ...]:
        p = e.payload or {}
        done = _fraction(p["processed"], p["parts"]) if {"parts", "processed"} <= p.keys() else None
        return (
            e.cursor,
            e.created_at,
            e.topic,
            e.job_id,
            e.run_id,
            p.get("status"),
            done,
            p.get("info"),
        )

    more = f"more: --after {events[-1].cursor}" if events and len(events) >= limit else None
    columns = "cursor,createdAt,topic,job,run,status,processed/parts,info"
    return _table(columns, map(row, events), caption=more)


def _versions_table(versions: Sequence[JobVersionPublic]) -> Table:
    def row(v: JobVersionPublic) -> tuple[Any, ...]:
        order = (v.snapshot.get("job_config_json") or {}).get("workflowExecutionOrder", [])
        ids = ", ".join(s if isinstance(s, str) else str(s.get("workflowId")) for s in order)
        return (v.version, v.snapshot.get("name"), ids, v.created_by, v.created_at)

    return _table("version,name,workflows,createdBy,createdAt", map(row, versions))


def _plan_table(steps: Sequence[dict[str, Any]]) -> Table:
    keys = (
        "position",
        "workflowId",
        "name",
        "isolation",
        "retries",
        "timeoutSeconds",
        "parameters",
    )
    return _table(",".join(keys), ([s.get(k) for k in keys] for s in steps))


# --------------------------------------------------------------------------- following runs


def _current_step(run: JobRunPublic) -> WorkflowRunPublic | None:
    """The workflow running now; before it starts, the next one; once ended, the last that ran."""
    waiting = (WorkflowRunStatus.PENDING, WorkflowRunStatus.NOT_RUN)
    running = [s for s in run.workflow_runs if s.status is WorkflowRunStatus.RUNNING]
    ran = [s for s in run.workflow_runs if s.status not in waiting]
    pending = [s for s in run.workflow_runs if s.status is WorkflowRunStatus.PENDING]
    if running:
        return running[0]
    if run.status.is_terminal or not pending:
        return ran[-1] if ran else None
    return pending[0]


_FILL = Column(ratio=1, no_wrap=True, overflow="ellipsis")


class _RunProgress:
    """A live progress bar of one run on stderr (does nothing when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self._progress = Progress(
            TextColumn("{task.fields[status]}", table_column=Column(width=9, no_wrap=True)),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.fields[progress]:>3}%"),
            TimeElapsedColumn(),
            TextColumn("{task.description}", markup=False, table_column=_FILL),
            console=_console(stderr=True),
            disable=not enabled,
            expand=True,
        )
        self._task = self._progress.add_task("", total=None, status="", progress=0)

    def __enter__(self) -> _RunProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def show(self, run: JobRunPublic) -> None:
        step = _current_step(run)
        where = f"{step.name} ({step.position + 1}/{len(run.workflow_runs)})" if step else ""
        self._progress.update(
            self._task,
            total=run.parts or None,
            completed=run.processed,
            description=" · ".join(x for x in (where, run.info) if x),
            status=run.status.value,
            progress=run.progress,
        )


def _wait_for_run(
    run_id: str, organization: str | None, *, live: bool, owned: bool
) -> JobRunPublic:
    """Read the run back every POLL_SECONDS until it ends. ``owned``: it runs in this process,
    so a first Ctrl-C asks it to cancel, and its thread is joined before returning."""
    cancel_sent = False
    with _RunProgress(live) as view:
        while True:
            try:
                run = jp.get_run(run_id, organization=organization)
                view.show(run)
                if run.status.is_terminal:
                    break
                time.sleep(POLL_SECONDS)
            except KeyboardInterrupt:
                if not owned or cancel_sent:
                    raise
                cancel_sent = True
                with contextlib.suppress(InvalidTransition):
                    jp.cancel(run_id, organization=organization)
                typer.echo("cancel requested; waiting for the run to stop", err=True)
    if owned:
        engine.wait_for_background()
        run = jp.get_run(run_id, organization=organization)
    return run


def _exit_for(run: JobRunPublic) -> NoReturn:
    raise typer.Exit(0 if run.status is JobStatus.COMPLETED else 1)


def _follow_started_run(
    run: JobRunPublic, organization: str | None, *, wait: bool, as_json: bool
) -> None:
    """For a run started here: print its id, wait for it, show it, exit by its status."""
    if not as_json:
        typer.echo(run.id)
    final = _wait_for_run(run.id, organization, live=wait, owned=True)
    _show(as_json, final, *_run_tables(final))
    _exit_for(final)


# --------------------------------------------------------------------------- jobs


@jobs_app.command("create")
def jobs_create(
    ctx: typer.Context,
    file: FileOpt = None,
    name: NameOpt = None,
    source_provider: SourceProviderOpt = None,
    workflow: WorkflowOpt = None,
    step: StepOpt = None,
    type: TypeOpt = None,
    operation: OperationOpt = None,
    source: SourceOpt = None,
    destination: DestinationOpt = None,
    config: ConfigOpt = None,
    trigger: TriggerOpt = None,
    wait: WaitFlag = True,
    as_json: JsonFlag = False,
) -> None:
    """Create a job (validated before anything is saved); prints its id, then the job.

    A job with --trigger immediate starts at once; the command then waits like `jobs execute`.
    """
    organization = _org(ctx)
    data = _job_fields(
        file,
        name=name,
        source_provider=source_provider,
        workflows=workflow,
        steps=step,
        type=type,
        operation=operation,
        source=source,
        destination=destination,
        config=config,
        trigger=trigger,
    )
    job = jp.create_job(data, organization=organization, wait=False)
    if not as_json:
        typer.echo(job.id)
        _show(False, job, *_job_tables(job))
    if job.trigger is Trigger.IMMEDIATE and job.last_run_id:
        run = _wait_for_run(job.last_run_id, organization, live=wait, owned=True)
        _show(as_json, jp.get_job(job.id, organization=organization), *_run_tables(run))
        _exit_for(run)
    if as_json:
        _show(True, job)


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    page: PageOpt = 1,
    page_size: PageSizeOpt = 50,
    status: StatusOpt = None,
    source_provider: SourceProviderOpt = None,
    type: TypeOpt = None,
    operation: OperationOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """List jobs, most recently changed first."""
    result = jp.list_jobs(
        organization=_org(ctx),
        page_number=page,
        page_size=page_size,
        status=status,
        source_provider=source_provider,
        type=type.value if type else None,
        operation=operation.value if operation else None,
    )
    _show(as_json, result, _jobs_table(result))


@jobs_app.command("get")
def jobs_get(ctx: typer.Context, job_id: JobIdArg, as_json: JsonFlag = False) -> None:
    """Show a job and its workflows."""
    job = jp.get_job(job_id, organization=_org(ctx))
    _show(as_json, job, *_job_tables(job))


@jobs_app.command("update")
def jobs_update(
    ctx: typer.Context,
    job_id: JobIdArg,
    file: FileOpt = None,
    name: NameOpt = None,
    source_provider: SourceProviderOpt = None,
    workflow: WorkflowOpt = None,
    step: StepOpt = None,
    type: TypeOpt = None,
    operation: OperationOpt = None,
    source: SourceOpt = None,
    destination: DestinationOpt = None,
    config: ConfigOpt = None,
    trigger: TriggerOpt = None,
    expected_version: Annotated[
        int | None,
        typer.Option(
            "--expected-version", metavar="N", help="Refuse unless the job is at this version."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a job; it is validated as a whole and saved as a new version.

    --workflow/--step replace the workflowExecutionOrder and keep the rest of jobConfigJson.
    """
    organization = _org(ctx)
    current = jp.get_job(job_id, organization=organization) if workflow or step else None
    data = _job_fields(
        file,
        name=name,
        source_provider=source_provider,
        workflows=workflow,
        steps=step,
        type=type,
        operation=operation,
        source=source,
        destination=destination,
        config=config,
        trigger=trigger,
        current_config=current.job_config_json.model_dump(by_alias=True) if current else None,
    )
    if not data:
        raise ValidationError("options", "nothing to change: give --file or an option")
    job = jp.update_job(job_id, data, expected_version=expected_version, organization=organization)
    _show(as_json, job, *_job_tables(job))


@jobs_app.command("delete")
def jobs_delete(ctx: typer.Context, job_id: JobIdArg) -> None:
    """Delete a job."""
    jp.delete_job(job_id, organization=_org(ctx))
    typer.echo(f"deleted job {job_id}")


@jobs_app.command("execute")
def jobs_execute(
    ctx: typer.Context,
    job_id: JobIdArg,
    version: Annotated[
        int | None,
        typer.Option("--version", metavar="N", help="Run this version (default: the current)."),
    ] = None,
    wait: WaitFlag = True,
    as_json: JsonFlag = False,
) -> None:
    """Run a job now, in this process: prints the run id, waits for the run, then shows it.

    Exits 0 if the run COMPLETED, 1 if it FAILED or was CANCELED. Ctrl-C cancels the run.
    """
    organization = _org(ctx)
    run = jp.execute(job_id, version=version, wait=False, organization=organization)
    _follow_started_run(run, organization, wait=wait, as_json=as_json)


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, run_id: RunIdArg, as_json: JsonFlag = False) -> None:
    """Ask a run to stop (before its next workflow, or at once where possible)."""
    run = jp.cancel(run_id, organization=_org(ctx))
    if as_json:
        _show(True, run)
    else:
        typer.echo(f"cancel requested for run {run.id} (status {run.status.value})")


@jobs_app.command("retry")
def jobs_retry(
    ctx: typer.Context, run_id: RunIdArg, wait: WaitFlag = True, as_json: JsonFlag = False
) -> None:
    """Run a FAILED or CANCELED run again from its first unfinished workflow.

    The new run executes in this process: prints its id and waits for it like `jobs execute`.
    """
    organization = _org(ctx)
    run = jp.retry(run_id, wait=False, organization=organization)
    _follow_started_run(run, organization, wait=wait, as_json=as_json)


@jobs_app.command("versions")
def jobs_versions(ctx: typer.Context, job_id: JobIdArg, as_json: JsonFlag = False) -> None:
    """The configurations a job has had, oldest first."""
    versions = jp.list_versions(job_id, organization=_org(ctx))
    _show(as_json, versions, _versions_table(versions))


@jobs_app.command("plan")
def jobs_plan(ctx: typer.Context, job_id: JobIdArg, as_json: JsonFlag = False) -> None:
    """The workflows a run of the job would execute, with resolved settings and parameters."""
    steps = jp.plan(job_id, organization=_org(ctx))
    _show(as_json, steps, _plan_table(steps))


# --------------------------------------------------------------------------- runs


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    job: JobFilterOpt = None,
    status: StatusOpt = None,
    page: PageOpt = 1,
    page_size: PageSizeOpt = 50,
    as_json: JsonFlag = False,
) -> None:
    """List job runs, newest first."""
    result = jp.list_runs(
        job, status=status, organization=_org(ctx), page_number=page, page_size=page_size
    )
    _show(as_json, result, _runs_table(result))


@runs_app.command("get")
def runs_get(ctx: typer.Context, run_id: RunIdArg, as_json: JsonFlag = False) -> None:
    """Show a run and its workflow runs."""
    run = jp.get_run(run_id, organization=_org(ctx))
    _show(as_json, run, *_run_tables(run))


@runs_app.command("watch")
def runs_watch(ctx: typer.Context, run_id: RunIdArg, as_json: JsonFlag = False) -> None:
    """Follow a run (started by any process) with a live progress bar until it ends.

    Exits 0 if it COMPLETED, 1 if it FAILED or was CANCELED.
    """
    run = _wait_for_run(run_id, _org(ctx), live=True, owned=False)
    _show(as_json, run, *_run_tables(run))
    _exit_for(run)


# --------------------------------------------------------------------------- workflows


@workflows_app.command("list")
def workflows_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """The workflows the organization can use: its own and the builtin ones."""
    workflows = jp.list_workflows(organization=_org(ctx))
    _show(as_json, workflows, _workflows_table(workflows))


@workflows_app.command("get")
def workflows_get(
    ctx: typer.Context,
    workflow_id: Annotated[str, typer.Argument(metavar="WORKFLOW_ID", help="Workflow id.")],
    as_json: JsonFlag = False,
) -> None:
    """Show a workflow."""
    wf = jp.get_workflow(workflow_id, organization=_org(ctx))
    _show(as_json, wf, _workflow_details(wf))


@workflows_app.command("register")
def workflows_register(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            metavar="TARGET",
            help="A module (registers every @workflow it declares), or an entrypoint "
            "path/file.py:flow or package.module:flow.",
        ),
    ],
    id: Annotated[str | None, typer.Option("--id", help="Workflow id (entrypoint only).")] = None,
    isolation: Annotated[
        Isolation | None, typer.Option("--isolation", help="Default isolation (entrypoint only).")
    ] = None,
    deployment: Annotated[
        str | None,
        typer.Option(
            "--deployment",
            help="flow/deployment a deployment-isolated workflow runs as (entrypoint only).",
        ),
    ] = None,
    retries: Annotated[
        int | None, typer.Option("--retries", min=0, help="Default retries (entrypoint only).")
    ] = None,
    timeout_seconds: Annotated[
        float | None,
        typer.Option("--timeout-seconds", min=0, help="Default timeout (entrypoint only)."),
    ] = None,
    builtin: Annotated[bool, typer.Option("--builtin", help="For every organization.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Register (or update) workflows in the catalog."""
    organization = _org(ctx)
    settings: dict[str, Any] = {
        "id": id,
        "isolation": isolation,
        "deployment": deployment,
        "retries": retries,
        "timeout_seconds": timeout_seconds,
    }
    if ":" in target:
        registered = [
            jp.register_workflow(target, builtin=builtin, organization=organization, **settings)
        ]
    elif any(value is not None for value in settings.values()):
        raise typer.BadParameter(
            "--id, --isolation, --deployment, --retries and --timeout-seconds need an entrypoint "
            "(path/file.py:flow or package.module:flow), not a module",
            param_hint="'TARGET'",
        )
    elif builtin:
        registered = jp.register_module(target, builtin=True)
    else:
        registered = jp.register_module(target, organization=organization)
    _show(as_json, registered, _workflows_table(registered))


@workflows_app.command("deploy")
def workflows_deploy(
    ctx: typer.Context,
    workflow_id: Annotated[str, typer.Argument(metavar="WORKFLOW_ID", help="Workflow id.")],
    pool: Annotated[
        str | None, typer.Option("--pool", help="Process work pool [PREFECT_JOBS_WORK_POOL].")
    ] = None,
) -> None:
    """Create the Prefect deployment a workflow runs as with `isolation: deployment`."""
    name = jp.deploy_workflow(workflow_id, pool=pool, organization=_org(ctx))
    typer.echo(f"deployment {name!r} on work pool {pool or get_settings().work_pool!r}")


# --------------------------------------------------------------------------- events


@events_app.command("list")
def events_list(
    ctx: typer.Context,
    job: JobFilterOpt = None,
    run: Annotated[
        str | None, typer.Option("--run", metavar="RUN_ID", help="Only this run's events.")
    ] = None,
    topic: Annotated[
        str | None, typer.Option("--topic", help="Only this topic, e.g. job:completed.")
    ] = None,
    after: Annotated[
        int | None, typer.Option("--after", metavar="CURSOR", help="Only events after this one.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Lifecycle events, oldest first."""
    events = jp.list_events(
        job_id=job, run_id=run, topic=topic, after=after, limit=limit, organization=_org(ctx)
    )
    _show(as_json, events, _events_table(events, limit))


# --------------------------------------------------------------------------- demo


def _status_line(label: str, counts: dict[str, Any], extra: str | None = None) -> str:
    """``READY      parts 0/4   0%``: a status and the run's counts, as the demo prints them."""
    line = (
        f"{label:<10} parts {counts.get('processed', 0)}/{counts.get('parts', 0)} "
        f"{counts.get('progress', 0):>3}%"
    )
    return f"{line}  {extra}" if extra else line


def _event_line(event: EventPublic) -> str:
    payload = event.payload or {}
    if event.topic == Topic.UPDATED.value:
        workflow = payload.get("workflow") or {}
        step = workflow.get("id")
        if workflow.get("status") == WorkflowRunStatus.COMPLETED.value:
            return _status_line("UPDATED", payload, f"{step} completed")
        return _status_line(
            "UPDATED", payload, " ".join(x for x in (step, payload.get("info")) if x)
        )
    outcome = (payload.get("outcome") or {}).get("message")
    return _status_line(str(payload.get("status", event.topic)), payload, outcome)


@app.command()
def demo(
    ctx: typer.Context,
    pos_dir: Annotated[
        Path | None,
        typer.Option("--pos-dir", help="The simulated POS system (default: <home>/demo/pos)."),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", help="Where reports go (default: <home>/demo/reports)."),
    ] = None,
    business_date: Annotated[
        datetime | None,
        typer.Option(
            "--business-date",
            formats=["%Y-%m-%d"],
            metavar="YYYY-MM-DD",
            help="Day to extract (default: yesterday).",
        ),
    ] = None,
) -> None:
    """Run the POS demo job here, printing each status it goes through.

    Registers the built-in workflows, creates the "Daily sales report extraction" job, runs it.

    Exits 0 if the run COMPLETED, 1 otherwise.
    """
    from flows import pos  # the built-in workflow library, needed only here

    organization = _org(ctx)
    home = get_settings().home_path / "demo"
    pos_dir = pos_dir or home / "pos"
    output_dir = output_dir or home / "reports"
    day = (business_date.date() if business_date else date.today() - timedelta(days=1)).isoformat()
    jp.register_module("flows", builtin=True)
    spec = pos.demo_job_spec(str(pos_dir), str(output_dir), day)
    job = jp.create_job(spec, organization=organization)
    typer.echo(f"job {job.id}: {job.name}, business date {day}")
    run = jp.execute(job.id, wait=False, organization=organization)
    typer.echo(_status_line(run.status.value, run.model_dump(), f"run {run.id}"))
    subscription = jp.subscribe(
        lambda event: typer.echo(_event_line(event)),
        run_id=run.id,
        topics=[
            t.value
            for t in Topic
            if t not in (Topic.CREATED, Topic.DELETED, Topic.OUTCOME_ACKNOWLEDGED)
        ],
        from_start=True,
        organization=organization,
    )
    try:
        final = _wait_for_run(run.id, organization, live=False, owned=True)
    finally:
        subscription.close(drain=True)
    typer.echo(f"reports: {output_dir / day}")
    if final.prefect_flow_run_id:
        typer.echo(f"prefect flow run: {final.prefect_url or final.prefect_flow_run_id}")
    _exit_for(final)


@app.command("api")
def api_server(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option("--host", help="Interface to listen on [PREFECT_JOBS_API_HOST].")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Port to listen on [PREFECT_JOBS_API_PORT].")
    ] = None,
) -> None:
    """Serve the REST API under /v1 with uvicorn until interrupted.

    Every request needs "Authorization: Bearer <key>" and acts for the key's organization.
    On the first start the organization gets a first key, printed once. Runs started over the
    API go to the job-runner deployment when the Prefect server has one, else execute in
    background threads of this process.
    """
    import uvicorn

    from jobs_plugin.rest import create_app

    settings = get_settings()
    _first_api_key(_org(ctx) or settings.default_organization)
    uvicorn.run(create_app(), host=host or settings.api_host, port=port or settings.api_port)


@app.command()
def reconcile(
    watch: Annotated[
        bool, typer.Option("--watch", help="Go on every --interval seconds until Ctrl-C.")
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval", min=0.1, help="Seconds between passes [PREFECT_JOBS_RECONCILE_SECONDS]."
        ),
    ] = None,
) -> None:
    """End the runs whose process died (no heartbeat for PREFECT_JOBS_CRASH_AFTER_SECONDS).

    Prints each run it ended. Safe to run in several copies, and beside `prefect-jobs api`,
    which reconciles on its own."""
    every = interval or get_settings().reconcile_seconds or 5.0
    while True:
        with _embedded_prefect():
            for run in jp.reconcile():
                typer.echo(f"run {run.id} of job {run.job_id}: {run.status.value}: {run.info}")
        if not watch:
            return
        time.sleep(every)


@app.command()
def up(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option("--host", help="Interface to listen on [PREFECT_JOBS_API_HOST].")
    ] = None,
    prefect_port: Annotated[
        int | None,
        typer.Option("--prefect-port", help="Prefect server and UI [PREFECT_JOBS_PREFECT_PORT]."),
    ] = None,
    api_port: Annotated[
        int | None, typer.Option("--api-port", help="REST API [PREFECT_JOBS_API_PORT].")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, help="Process workers on the work pool [PREFECT_JOBS_WORK_POOL]."
        ),
    ] = 1,
) -> None:
    """Start the Prefect server and UI, the REST API and a worker (Ctrl-C stops all).

    Everything stays under the home folder; running it again reuses it."""
    from jobs_plugin import stack

    raise typer.Exit(
        stack.run(
            host=host,
            prefect_port=prefect_port,
            api_port=api_port,
            organization=_org(ctx),
            workers=workers,
        )
    )


# --------------------------------------------------------------------------- API keys

keys_app = typer.Typer(no_args_is_help=True, help="API keys of the REST API.")
app.add_typer(keys_app, name="keys")
app.add_typer(files_app, name="files")
app.add_typer(workbooks_app, name="workbooks")
app.add_typer(records_app, name="records")
OrgOption = Annotated[
    str | None,
    typer.Option(
        "--org", metavar="NAME", help="Organization (default: --organization, or the default)."
    ),
]


def _first_api_key(organization: str) -> None:
    """Give ``organization`` a first API key if it has none, printing it this once."""
    if jp.list_api_keys(organization=organization):
        return
    _, secret = jp.create_api_key(organization, name="first key")
    typer.echo(
        f"first API key for organization {organization!r}: {secret} "
        "(shown once; create more with prefect-jobs keys create)"
    )


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    org: OrgOption = None,
    name: Annotated[
        str | None, typer.Option("--name", metavar="LABEL", help="A label for the key.")
    ] = None,
) -> None:
    """Create an API key; prints the key, which is not shown again."""
    key, secret = jp.create_api_key(org or _org(ctx), name=name)
    typer.echo(secret)
    typer.echo(f"{key.id}: store this key now, it will not be shown again", err=True)


@keys_app.command("list")
def keys_list(ctx: typer.Context, org: OrgOption = None, as_json: JsonFlag = False) -> None:
    """The organization's API keys (their prefixes, never the keys)."""
    keys = jp.list_api_keys(organization=org or _org(ctx))
    rows = [(k.id, k.prefix, k.name, k.created_at, k.revoked_at) for k in keys]
    _show(as_json, keys, _table("id,prefix,name,created,revoked", rows))


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="Id of the API key.")],
    org: OrgOption = None,
) -> None:
    """Revoke an API key; requests with it answer 401 from now on."""
    key = jp.revoke_api_key(key_id, organization=org or _org(ctx))
    typer.echo(f"{key.id} revoked")
