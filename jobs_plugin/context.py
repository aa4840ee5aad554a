"""The read-only context a workflow runs with, and the only channel it has to report progress.

A workflow sees its own parameters and this context: ids of the job, the run and itself, its
position, the attempt. It cannot read other workflows' parameters or results. Reporting
(``set_parts``, ``advance``, ``report``) writes the run's parts, processed count, progress
and info, and emits ``job:updated`` at most every ``progress_event_seconds``.
"""

from __future__ import annotations

import json
import os
import time
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

from jobs_plugin import catalog
from jobs_plugin.settings import get_settings

_current: ContextVar[RunContext | None] = ContextVar("prefect_jobs_run_context", default=None)
ENV_VAR = "PREFECT_JOBS_RUN_CONTEXT"
"""Carries the context (JSON) to a ``deployment``-isolated workflow, which runs in a process of
its own on a worker: the job sets it in the flow run's job variables."""


@dataclass(frozen=True)
class RunContext:
    job_id: str
    job_name: str
    run_id: str
    organization_id: str
    attempt: int
    workflow_id: str
    workflow_run_id: str
    position: int
    lineage_id: str = ""
    """The id of the first attempt of this run: stable across retries, for checkpoints."""
    _last_event: list[float] = field(default_factory=lambda: [0.0], repr=False, compare=False)

    def set_parts(self, parts: int) -> None:
        """Declare how many parts (chunks) this workflow will process; default 1."""
        self._report(parts=parts, force=True)

    def advance(self, parts: int = 1, *, info: str | None = None) -> None:
        """Count ``parts`` more parts of this workflow as processed."""
        self._report(advance=parts, info=info)

    def report(self, fraction: float | None = None, *, info: str | None = None) -> None:
        """Report finer progress within this workflow (0..1) and/or a status text."""
        self._report(fraction=fraction, info=info)

    def set_outcome(self, outcome: dict[str, Any]) -> None:
        """Merge keys into the run's ``outcome`` (e.g. the id of a file this workflow made)."""
        catalog.set_outcome(self.run_id, outcome)

    def _report(
        self,
        *,
        parts: int | None = None,
        advance: int = 0,
        fraction: float | None = None,
        info: str | None = None,
        force: bool = False,
    ) -> None:
        now = time.monotonic()
        emit = force or now - self._last_event[0] >= get_settings().progress_event_seconds
        if emit:
            self._last_event[0] = now
        catalog.report_progress(
            self.workflow_run_id,
            parts=parts,
            advance=advance,
            fraction=fraction,
            info=info,
            emit=emit,
        )


def to_env(ctx: RunContext) -> str:
    return json.dumps({k: v for k, v in asdict(ctx).items() if not k.startswith("_")})


def _from_env() -> RunContext | None:
    raw = os.environ.get(ENV_VAR)
    if not raw:
        return None
    ctx = _from_env_cache.get(raw)
    if ctx is None:
        ctx = _from_env_cache[raw] = RunContext(**json.loads(raw))
    return ctx


_from_env_cache: dict[str, RunContext] = {}


def get_run_context() -> RunContext:
    """The context of the workflow being run; raises outside of a job run."""
    ctx = current_run_context()
    if ctx is None:
        raise RuntimeError("get_run_context() called outside of a prefect-jobs workflow run")
    return ctx


def current_run_context() -> RunContext | None:
    """The context of the workflow being run, or None outside of a job run."""
    return _current.get() or _from_env()


def bind(ctx: RunContext | None) -> object:
    return _current.set(ctx)


def unbind(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
