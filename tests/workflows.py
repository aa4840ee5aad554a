"""Workflows the test suite runs. Importable as `tests.workflows` so process isolation can
re-import them in a fresh interpreter."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from prefect import flow

from jobs_plugin import get_run_context, workflow


def mark(path: str, text: str) -> None:
    """Write ``text`` to ``path`` at once (a rename), so a test polling for the file never
    reads it half-written."""
    partial = Path(f"{path}.partial")
    partial.write_text(text)
    os.replace(partial, path)


# Mutated by `mutate_process_state`; read by `report_process_state`.
MARKER: dict[str, str] = {}


@workflow(id="test.noop")
@flow(name="noop")
async def noop() -> None:
    """Does nothing; the engine's overhead is all there is."""


@workflow(id="test.record")
@flow(name="record")
async def record(path: str, label: str) -> str:
    """Append `label` and the run context to the JSON-lines file at `path`."""
    ctx = get_run_context()
    line = {
        "label": label,
        "position": ctx.position,
        "workflow": ctx.workflow_id,
        "run": ctx.run_id,
    }
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")
    return label


@workflow(id="test.fail")
@flow(name="fail")
async def fail(message: str = "boom") -> None:
    raise ValueError(message)


@workflow(id="test.flaky")
@flow(name="flaky")
async def flaky(counter_path: str, fail_times: int = 1) -> None:
    """Fails the first `fail_times` calls (counted in a file), then succeeds."""
    path = Path(counter_path)
    count = int(path.read_text()) if path.exists() else 0
    path.write_text(str(count + 1))
    if count < fail_times:
        raise RuntimeError(f"flaky failure {count + 1}")


@workflow(id="test.gate")
@flow(name="gate")
async def gate(path: str) -> None:
    """Fails while the file at `path` does not exist (a fixable failure, for retry tests)."""
    if not Path(path).exists():
        raise FileNotFoundError(path)


@workflow(id="test.sleep")
@flow(name="sleep")
async def sleep(
    seconds: float, started_path: str | None = None, release_path: str | None = None
) -> None:
    """Sleep `seconds`, or until the file at `release_path` exists."""
    if started_path:
        mark(started_path, "started")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if release_path and Path(release_path).exists():
            return
        await asyncio.sleep(0.05)


@workflow(id="test.sync-sleep")
@flow(name="sync-sleep")
def sync_sleep(seconds: float, started_path: str | None = None) -> None:
    if started_path:
        mark(started_path, str(os.getpid()))
    time.sleep(seconds)


@workflow(id="test.chunks")
@flow(name="chunks")
async def chunks(count: int = 4) -> None:
    ctx = get_run_context()
    ctx.set_parts(count)
    for i in range(count):
        ctx.advance(1, info=f"chunk {i + 1} of {count}")


@workflow(id="test.crash")
@flow(name="crash")
def crash() -> None:
    """Ends its process at once, as a segfault or an OOM kill would."""
    os._exit(3)


@workflow(id="test.mutate")
@flow(name="mutate")
def mutate_process_state(workdir: str) -> None:
    MARKER["touched"] = "yes"
    os.environ["PREFECT_JOBS_TEST_LEAK"] = "leaked"
    os.chdir(workdir)


@workflow(id="test.report")
@flow(name="report")
def report_process_state(path: str) -> None:
    state = {
        "marker": MARKER.get("touched"),
        "env": os.environ.get("PREFECT_JOBS_TEST_LEAK"),
        "cwd": os.getcwd(),
        "pid": os.getpid(),
    }
    Path(path).write_text(json.dumps(state))
