"""Per-workflow overhead of a compiled job, side by side with hand-written Prefect flows.

Three variants, each a parent flow running N empty subflows one after another, all in this
process against one Prefect server:

* ``sync``: hand-written synchronous parent and child flows, default settings ("the default";
  each synchronous flow run joins its heartbeat thread at exit, about 1 s).
* ``async``: the same, hand-written with ``async def`` flows.
* ``compiled``: a job whose ``workflowExecutionOrder`` lists N times an empty async workflow,
  run with ``jobs_plugin.execute`` (wall time of the whole call: planning, catalog records,
  hooks, the compiled parent flow and its N subflows).

Per-workflow overhead = wall time of the N-step run / N. Each variant is warmed up once, then
the repetitions are interleaved (the variant order rotates every repetition) and the median is
reported. A measurement, not a test: the exit code is 0 unless something errors.

The Prefect server is ``PREFECT_API_URL`` if set, else Prefect's test harness (SQLite). On a
SQLite server the event persister's batch writes collide with API writes now and then; the API
answers 503 ("database is locked") and the Prefect client retries after about 2 s, whichever
variant is running. Those waits are random and swamp the differences measured here, so the
harness server is started with its event persister off unless ``--event-persister`` is given.
The client's retries are counted either way (``retries`` column), and when there were some the
results are also shown without the retry waits.

Run from the repository root::

    .venv/bin/python bench/overhead.py [--n 10 50] [--repeat 3] [--json results.json]
                                       [--event-persister]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Before Prefect is imported: no analytics look-ups, quiet logs, a patient ephemeral server.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

if __name__ == "__main__":
    # Run as a script: the workflow below must be importable (``bench.overhead:noop``) for the
    # catalog, so the importable module does the work and this ``__main__`` copy stops here.
    from bench.overhead import main as _main

    sys.exit(_main())

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow  # noqa: E402
from prefect.utilities.asyncutils import run_coro_as_sync  # noqa: E402

from jobs_plugin import workflow  # noqa: E402

VARIANTS = ("sync", "async", "compiled")
LABELS = {
    "sync": "hand-written sync (default)",
    "async": "hand-written async",
    "compiled": "compiled job",
}
WARMUP_N = 2
ASYNC_TOLERANCE = 1.10


# --------------------------------------------------------------------------- the flows


@workflow(id="bench.noop")
@flow(name="bench-noop")
async def noop() -> None:
    """An empty workflow: the engine's overhead is all there is."""


@flow(name="bench-sync-child")
def sync_child() -> None:
    pass


@flow(name="bench-sync-parent")
def sync_parent(n: int) -> None:
    for _ in range(n):
        sync_child()


@flow(name="bench-async-child")
async def async_child() -> None:
    pass


@flow(name="bench-async-parent")
async def async_parent(n: int) -> None:
    for _ in range(n):
        await async_child()


# --------------------------------------------------------------------------- set-up


@contextlib.contextmanager
def temporary_catalog() -> Iterator[Path]:
    """A fresh SQLite catalog under a temporary folder, used by ``jobs_plugin`` meanwhile."""
    from jobs_plugin import db
    from jobs_plugin.settings import get_settings

    names = ("PREFECT_JOBS_HOME", "PREFECT_JOBS_DATABASE_URL", "PREFECT_JOBS_WORKFLOW_MODULES")
    saved = {name: os.environ.get(name) for name in names}
    home = Path(tempfile.mkdtemp(prefix="prefect-jobs-bench-"))
    os.environ["PREFECT_JOBS_HOME"] = str(home)
    os.environ["PREFECT_JOBS_DATABASE_URL"] = f"sqlite:///{home / 'catalog.db'}"
    os.environ["PREFECT_JOBS_WORKFLOW_MODULES"] = "[]"  # register only the bench workflow
    get_settings.cache_clear()
    try:
        yield home
    finally:
        db.dispose_all()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
        shutil.rmtree(home, ignore_errors=True)


PERSISTER_ENV = "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED"


@contextlib.contextmanager
def prefect_server(*, event_persister: bool) -> Iterator[str]:
    """The ``PREFECT_API_URL`` in use, or Prefect's test harness server (one for the run).

    Yields a description of the server. ``event_persister=False`` starts the harness server
    with its event persister off (the server subprocess inherits this process's environment).
    """
    existing = os.environ.get("PREFECT_API_URL")
    if existing:
        yield f"{existing} (PREFECT_API_URL; its own settings)"
        return
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    saved = os.environ.get(PERSISTER_ENV)
    if not event_persister:
        os.environ[PERSISTER_ENV] = "false"
    try:
        with prefect_test_harness(server_startup_timeout=180):
            persister = "on" if event_persister else "off"
            yield f"{PREFECT_API_URL.value()} (test harness, SQLite, event persister {persister})"
    finally:
        if saved is None:
            os.environ.pop(PERSISTER_ENV, None)
        else:
            os.environ[PERSISTER_ENV] = saved


class RetryCounter(logging.Filter):
    """Counts the Prefect client's retries (and their waits) from its debug log records.

    Installed as a filter on the ``prefect.client`` logger, whose level it lowers to DEBUG to
    see those records; it lets through only what the logger let through before.
    """

    _WAIT = re.compile(r"Another attempt will be made in ([0-9.]+)s")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.retries = 0
        self.wait_seconds = 0.0
        self._logger = logging.getLogger("prefect.client")
        self._passthrough = self._logger.getEffectiveLevel()

    def install(self) -> None:
        self._logger.addFilter(self)
        self._logger.setLevel(logging.DEBUG)

    def uninstall(self) -> None:
        self._logger.removeFilter(self)
        self._logger.setLevel(self._passthrough)

    def reset(self) -> None:
        with self._lock:
            self.retries, self.wait_seconds = 0, 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        match = self._WAIT.search(record.getMessage())
        if match:
            with self._lock:
                self.retries += 1
                self.wait_seconds += float(match.group(1))
        return record.levelno >= self._passthrough


# --------------------------------------------------------------------------- runners


def make_runners(ns: list[int]) -> dict[str, Callable[[int], None]]:
    """One callable per variant that runs its N-step parent flow to completion."""
    import jobs_plugin as jp

    jp.register_workflow(noop)
    jobs: dict[int, str] = {}
    for n in sorted({WARMUP_N, *ns}):
        job = jp.create_job(
            name=f"bench-noop-x{n}",
            job_config_json={"workflowExecutionOrder": ["bench.noop"] * n},
        )
        jobs[n] = job.id

    def run_sync(n: int) -> None:
        sync_parent(n)

    def run_async(n: int) -> None:
        run_coro_as_sync(async_parent(n))

    def run_compiled(n: int) -> None:
        run = jp.execute(jobs[n])
        done = [w for w in run.workflow_runs if w.status is jp.WorkflowRunStatus.COMPLETED]
        if run.status is not jp.JobStatus.COMPLETED or len(done) != n:
            raise RuntimeError(
                f"compiled job x{n} ended {run.status.value} with {len(done)}/{n} workflows "
                f"completed: {run.model_dump(mode='json')}"
            )

    return {"sync": run_sync, "async": run_async, "compiled": run_compiled}


def timed(run: Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    run(n)
    return time.perf_counter() - start


@dataclass
class Sample:
    seconds: float
    retries: int
    retry_wait_seconds: float


# --------------------------------------------------------------------------- results


@dataclass
class Result:
    variant: str
    n: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def median_without_retry_waits(self) -> float:
        return statistics.median(s.seconds - s.retry_wait_seconds for s in self.samples)

    @property
    def retries(self) -> int:
        return sum(s.retries for s in self.samples)

    def ms_per_workflow(self, *, without_retry_waits: bool = False) -> float:
        seconds = self.median_without_retry_waits if without_retry_waits else self.median
        return seconds / self.n * 1000


@dataclass
class Check:
    n: int
    name: str
    passed: bool
    detail: str


def checks_for(
    results: dict[tuple[str, int], Result], ns: list[int], *, without_retry_waits: bool = False
) -> list[Check]:
    def ms(variant: str, n: int) -> float:
        return results[variant, n].ms_per_workflow(without_retry_waits=without_retry_waits)

    checks = []
    for n in ns:
        job, hand_async, hand_sync = ms("compiled", n), ms("async", n), ms("sync", n)
        limit = ASYNC_TOLERANCE * hand_async
        checks.append(
            Check(
                n,
                f"compiled job per-workflow <= {ASYNC_TOLERANCE:.2f} x hand-written async",
                job <= limit,
                f"{job:.1f} ms vs {limit:.1f} ms ({ASYNC_TOLERANCE:.2f} x {hand_async:.1f} ms); "
                f"ratio {job / hand_async:.3f}",
            )
        )
        checks.append(
            Check(
                n,
                "compiled job per-workflow < hand-written sync default",
                job < hand_sync,
                f"{job:.1f} ms vs {hand_sync:.1f} ms; ratio {job / hand_sync:.3f}",
            )
        )
    return checks


def table(
    results: dict[tuple[str, int], Result], ns: list[int], *, without_retry_waits: bool = False
) -> str:
    header = (
        f"{'variant':<28} {'N':>4} {'median s':>9} {'ms/workflow':>12} "
        f"{'vs async':>9} {'vs sync':>8} {'retries':>8}  samples (s)"
    )
    lines = [header, "-" * len(header)]
    for n in ns:
        base_async = results["async", n].ms_per_workflow(without_retry_waits=without_retry_waits)
        base_sync = results["sync", n].ms_per_workflow(without_retry_waits=without_retry_waits)
        for variant in VARIANTS:
            r = results[variant, n]
            median = r.median_without_retry_waits if without_retry_waits else r.median
            ms = r.ms_per_workflow(without_retry_waits=without_retry_waits)
            samples = ", ".join(
                f"{s.seconds - (s.retry_wait_seconds if without_retry_waits else 0):.2f}"
                for s in r.samples
            )
            lines.append(
                f"{LABELS[variant]:<28} {n:>4} {median:>9.2f} {ms:>12.1f} "
                f"{ms / base_async:>8.3f}x {ms / base_sync:>7.3f}x {r.retries:>8}  {samples}"
            )
    return "\n".join(lines)


def print_checks(checks: list[Check]) -> None:
    for c in checks:
        print(f"  N={c.n:<3} {'PASS' if c.passed else 'FAIL'}  {c.name}: {c.detail}")


# --------------------------------------------------------------------------- main


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(ns: list[int], repeat: int) -> dict[tuple[str, int], Result]:
    runners = make_runners(ns)
    for variant in VARIANTS:
        seconds = timed(runners[variant], WARMUP_N)
        progress(f"warm-up  {variant:<8} N={WARMUP_N:<3} {seconds:7.2f} s")
    results = {(v, n): Result(v, n) for n in ns for v in VARIANTS}
    counter = RetryCounter()
    counter.install()
    try:
        for rep in range(repeat):
            order = VARIANTS[rep % len(VARIANTS) :] + VARIANTS[: rep % len(VARIANTS)]
            for n in ns:
                for variant in order:
                    counter.reset()
                    seconds = timed(runners[variant], n)
                    sample = Sample(seconds, counter.retries, counter.wait_seconds)
                    results[variant, n].samples.append(sample)
                    retried = (
                        f"  ({sample.retries} client retries, {sample.retry_wait_seconds:.1f} s)"
                        if sample.retries
                        else ""
                    )
                    progress(
                        f"rep {rep + 1}/{repeat}  {variant:<8} N={n:<3} {seconds:7.2f} s{retried}"
                    )
    finally:
        counter.uninstall()
    return results


def to_json(
    results: dict[tuple[str, int], Result], checks: list[Check], **info: Any
) -> dict[str, Any]:
    rows = []
    for r in results.values():
        base_async, base_sync = results["async", r.n], results["sync", r.n]
        rows.append(
            {
                "variant": r.variant,
                "n": r.n,
                "samples": [asdict(s) for s in r.samples],
                "median_s": r.median,
                "ms_per_workflow": r.ms_per_workflow(),
                "ratio_vs_async": r.ms_per_workflow() / base_async.ms_per_workflow(),
                "ratio_vs_sync": r.ms_per_workflow() / base_sync.ms_per_workflow(),
                "retries": r.retries,
                "ms_per_workflow_without_retry_waits": r.ms_per_workflow(without_retry_waits=True),
            }
        )
    return {**info, "results": rows, "checks": [asdict(c) for c in checks]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, nargs="+", default=[10, 50], help="steps per run")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--event-persister",
        action="store_true",
        help="keep the test harness server's event persister on (Prefect's default; noisier)",
    )
    args = parser.parse_args(argv)
    ns: list[int] = args.n
    if args.repeat < 1 or any(n < 1 for n in ns):
        parser.error("--n and --repeat must be 1 or more")

    started = time.perf_counter()
    with temporary_catalog(), prefect_server(event_persister=args.event_persister) as server:
        progress(f"Prefect API: {server}")
        results = measure(ns, args.repeat)

    import prefect

    print()
    print(
        f"Per-workflow overhead: parent flow + N empty subflows (median of {args.repeat}, "
        f"interleaved; prefect {prefect.__version__}, {os.cpu_count()} CPUs, "
        f"{time.perf_counter() - started:.0f} s in all)"
    )
    print(f"Prefect server: {server}")
    print(table(results, ns))
    print()
    print("Acceptance checks:")
    checks = checks_for(results, ns)
    print_checks(checks)

    if any(r.retries for r in results.values()):
        print()
        print(
            "The Prefect client retried requests (server answered 503, SQLite 'database is "
            "locked'); the same without those retry waits:"
        )
        print(table(results, ns, without_retry_waits=True))
        print()
        print("Acceptance checks without retry waits:")
        print_checks(checks_for(results, ns, without_retry_waits=True))

    if args.json:
        payload = to_json(
            results,
            checks,
            prefect_version=prefect.__version__,
            cpu_count=os.cpu_count(),
            repeat=args.repeat,
            server=server,
        )
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nJSON written to {args.json}")
    return 0
