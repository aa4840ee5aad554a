"""``prefect-jobs schedules``: when jobs run by themselves (and ``prefect-jobs jobs schedule``).

Each change goes to the job's Prefect deployment first, so it needs the Prefect server (the
one ``prefect-jobs up`` runs, or ``PREFECT_API_URL``); ``jobs_plugin.cli`` adds this app to the
root app, whose ``-o ORGANIZATION`` option it honours.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

import jobs_plugin as jp
from jobs_plugin.cli_data import organization_of
from jobs_plugin.models import JobSchedulePublic

schedules_app = typer.Typer(
    no_args_is_help=True, help="Job schedules (cron or interval), kept on Prefect deployments."
)

JobArg = Annotated[str, typer.Argument(metavar="JOB_ID", help="Job id.")]
ScheduleOpt = Annotated[
    str | None, typer.Option("--schedule", help="One schedule id (default: all of the job's).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (camelCase) on stdout.")]


def _show(as_json: bool, schedules: list[JobSchedulePublic]) -> None:
    if as_json:
        typer.echo(json.dumps([s.model_dump(by_alias=True, mode="json") for s in schedules]))
        return
    table = Table("id", "when", "timezone", "active", box=None)
    for s in schedules:
        when = s.cron if s.cron is not None else f"every {s.interval_seconds:g} s"
        table.add_row(s.id, when, s.timezone, "yes" if s.active else "paused")
    Console().print(table)


@schedules_app.command("add")
def schedules_add(
    ctx: typer.Context,
    job_id: JobArg,
    cron: Annotated[
        str | None, typer.Option("--cron", help='A cron expression, e.g. "0 6 * * *".')
    ] = None,
    interval: Annotated[
        float | None, typer.Option("--interval", min=1, help="Every this many seconds.")
    ] = None,
    timezone: Annotated[
        str, typer.Option("--timezone", help="IANA timezone of the schedule.")
    ] = "UTC",
    paused: Annotated[bool, typer.Option("--paused", help="Add it paused.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Add a schedule to a job (its Prefect deployment is created with the first one)."""
    schedule = jp.schedule_job(
        job_id,
        cron=cron,
        interval_seconds=interval,
        timezone=timezone,
        active=not paused,
        organization=organization_of(ctx),
    )
    if as_json:
        _show(True, [schedule])
        return
    job = jp.get_job(job_id, organization=organization_of(ctx))
    typer.echo(f"schedule {schedule.id} added to deployment {job.prefect_deployment!r}")


@schedules_app.command("list")
def schedules_list(ctx: typer.Context, job_id: JobArg, as_json: JsonOption = False) -> None:
    """The job's schedules."""
    _show(as_json, jp.list_schedules(job_id, organization=organization_of(ctx)))


@schedules_app.command("pause")
def schedules_pause(
    ctx: typer.Context, job_id: JobArg, schedule: ScheduleOpt = None, as_json: JsonOption = False
) -> None:
    """Pause the job's schedules (or one): no new runs until resumed."""
    _show(as_json, jp.pause_schedules(job_id, schedule, organization=organization_of(ctx)))


@schedules_app.command("resume")
def schedules_resume(
    ctx: typer.Context, job_id: JobArg, schedule: ScheduleOpt = None, as_json: JsonOption = False
) -> None:
    """Resume the job's schedules (or one)."""
    _show(as_json, jp.resume_schedules(job_id, schedule, organization=organization_of(ctx)))


@schedules_app.command("delete")
def schedules_delete(
    ctx: typer.Context,
    job_id: JobArg,
    schedule_id: Annotated[str, typer.Argument(metavar="SCHEDULE_ID", help="Schedule id.")],
) -> None:
    """Remove a schedule; with the last one the job's deployment goes."""
    jp.delete_schedule(job_id, schedule_id, organization=organization_of(ctx))
    typer.echo(f"schedule {schedule_id} deleted")


@schedules_app.command("sync")
def schedules_sync() -> None:
    """Push every job's schedules to Prefect (after `prefect deploy`, or a new Prefect DB)."""
    kept = jp.sync_schedules()
    typer.echo(f"{len(kept)} job deployment(s) in step with the catalog")
    for name in kept:
        typer.echo(f"  {name}")
