"""A job run as the Prefect UI shows it: a progress artifact (the run's progress, with parts
processed and the current workflow) and a markdown artifact (the outcome, then the plan), both
on the job's flow run.

Every call to Prefect here runs in the background of the job's flow (awaited only when the run
ends), so it overlaps with the workflows' own Prefect calls instead of adding to them; a
failure is logged and never fails the run. ``PREFECT_JOBS_PREFECT_ARTIFACTS=false`` turns
them off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any
from uuid import UUID

from prefect import State
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    aupdate_progress_artifact,
)

from jobs_plugin.models import JobRun
from jobs_plugin.planner import PlannedStep
from jobs_plugin.settings import get_settings
from jobs_plugin.translation import JobStatus, translate

logger = logging.getLogger("prefect_jobs.artifacts")
UPDATE_SECONDS = 1.0
"""Least time between two progress updates of a run's artifact (the final one always goes)."""


def artifact_key(kind: str, run_id: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes: ``prefect-jobs-plan-us-jr-…``."""
    return f"prefect-jobs-{kind}-{run_id.lower().replace('_', '-')}"


def progress_text(run: JobRun, current: str | None = None) -> str:
    text = f"{run.processed} of {run.parts} parts processed ({run.progress}%)"
    return f"{text}, running {current}" if current else text


def plan_markdown(name: str, run: JobRun, steps: Sequence[PlannedStep]) -> str:
    lines = [
        "## Plan",
        "",
        f"Run `{run.id}`, attempt {run.attempt}, job version {run.job_version}.",
        "",
        "| # | workflow | isolation | retries | timeout (s) |",
        "|---|---|---|---|---|",
    ]
    for s in steps:
        timeout = "" if s.timeout_seconds is None else f"{s.timeout_seconds:g}"
        lines.append(
            f"| {s.position + 1} | `{s.workflow_id}` | {s.isolation.value} | {s.retries} "
            f"| {timeout} |"
        )
    return "\n".join(lines)


def outcome_markdown(name: str, run: JobRun, status: JobStatus, message: str) -> str:
    outcome = run.outcome or {}
    lines = [
        f"# {name}: {status.value}",
        "",
        f"**{status.value.capitalize()}**: {outcome.get('message') or message}",
        "",
        f"{progress_text(run)}.",
    ]
    extra = {k: v for k, v in outcome.items() if k not in ("heading", "message")}
    if extra:
        lines += ["", "| outcome | value |", "|---|---|"]
        lines += [f"| {k} | `{v}` |" for k, v in sorted(extra.items())]
    return "\n".join(lines)


class RunArtifacts:
    """The artifacts of one run of a job's flow; create inside the flow run.

    A run that ends within ``UPDATE_SECONDS`` gets both artifacts at its end (two calls); a
    longer one gets its progress artifact then, updated at most every ``UPDATE_SECONDS``."""

    def __init__(self, name: str, run: JobRun, steps: Sequence[PlannedStep]) -> None:
        self.enabled = get_settings().prefect_artifacts
        self.name = name
        self.run_id = run.id
        self.plan = plan_markdown(name, run, steps)
        self._pending: list[asyncio.Future[Any]] = []
        self._progress_id: asyncio.Future[UUID | None] | None = None
        self._last_update: asyncio.Future[Any] | None = None
        self._last: tuple[int, int, int, str | None] | None = None
        self._sent_at = time.monotonic()

    def _background(self, call: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        async def guarded() -> Any:
            try:
                return await call
            except Exception as exc:  # the UI's view is not worth a failed run
                logger.warning("could not write an artifact of run %s: %s", self.run_id, exc)
                return None

        future = asyncio.ensure_future(guarded())
        self._pending.append(future)
        return future

    def due(self) -> bool:
        """Whether a progress update would be sent now: at most one per ``UPDATE_SECONDS``,
        so a job of many short workflows costs its Prefect server a few artifact writes, not
        one per workflow."""
        return self.enabled and time.monotonic() - self._sent_at >= UPDATE_SECONDS

    def update(self, run: JobRun, current: str | None = None) -> None:
        """Show ``run``'s progress (sent in the background, if anything changed)."""
        state = (run.parts, run.processed, run.progress, current)
        if not self.enabled or state == self._last:
            return
        self._last = state
        self._sent_at = time.monotonic()
        if self._progress_id is None:
            self._progress_id = self._background(
                acreate_progress_artifact(
                    progress=float(run.progress),
                    key=artifact_key("progress", run.id),
                    description=progress_text(run, current),
                )
            )
            self._last_update = self._progress_id
            return
        progress_id, previous = self._progress_id, self._last_update

        async def send() -> None:
            artifact_id = await progress_id
            if previous is not None:  # updates land in the order they were made
                await previous
            if artifact_id is not None:
                await aupdate_progress_artifact(
                    artifact_id, float(run.progress), description=progress_text(run, current)
                )

        self._last_update = self._background(send())

    async def finish(self, run: JobRun, final: State[Any]) -> None:
        """Show the final progress, the plan and the outcome of ``final`` (the state the job's
        flow ends in), and wait for every artifact call."""
        if self.enabled:
            status = translate(run.status, final.type, final.name).status
            if status is JobStatus.COMPLETED:
                run = run.model_copy(update={"processed": run.parts, "progress": 100})
            self._last = None  # the final state always goes
            self.update(run)
            message = final.message or status.value.lower()
            summary = outcome_markdown(self.name, run, status, message) + "\n\n" + self.plan
            self._background(
                acreate_markdown_artifact(
                    markdown=summary,
                    key=artifact_key("summary", run.id),
                    description=f"Plan and outcome of run {run.id}",
                )
            )
        for future in list(self._pending):
            await future
