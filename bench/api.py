"""Requests per second of the REST API, side by side with Prefect's own server, in one run.

Both servers run as subprocesses on loopback ports of this machine, each on a fresh SQLite
database in a temporary folder:

* ours: ``jobs_plugin.rest.create_app()`` under uvicorn (log level warning, as Prefect's
  server runs), catalog ``sqlite:///<tmp>/ours/catalog.db``;
* Prefect: ``prefect server start`` with ``PREFECT_HOME=<tmp>/prefect`` (its SQLite default),
  analytics and UI off, its background services as by default.

Operations, each a fixed number of requests over httpx clients with keep-alive (one client per
concurrent worker thread), after a warm-up:

| operation | ours                    | Prefect                                   |
|-----------|-------------------------|-------------------------------------------|
| create    | ``POST /v1/jobs``       | ``POST /api/flow_runs/`` (one flow made first) |
| get       | ``GET /v1/jobs/{id}``   | ``GET /api/flow_runs/{id}``               |
| list      | ``GET /v1/jobs?pageSize=50`` | ``POST /api/flow_runs/filter`` ``{"limit": 50}`` |

``--profile`` then replays the same route handlers in this process under cProfile (on the
same catalog) and prints where a request's time goes on our side.

    .venv/bin/python bench/api.py                       # 500 requests per operation, 1 client
    .venv/bin/python bench/api.py -n 1000 -c 4          # 4 concurrent clients
    .venv/bin/python bench/api.py --json > api.json     # table to stderr, JSON to stdout
    .venv/bin/python bench/api.py --profile --skip-prefect
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from typing import Any, TextIO  # noqa: E402

import httpx  # noqa: E402

OPERATIONS = ("create", "get", "list")
LIST_SIZE = 50
JOB_BODY: dict[str, Any] = {
    "name": "bench job",
    "sourceProvider": "bench",
    "jobConfigJson": {"workflowExecutionOrder": ["bench.noop"]},
}
OURS_LAUNCHER = """
import sys, uvicorn
from jobs_plugin.rest import create_app
uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    """A server under test: how to make each request of each operation."""

    name: str
    base_url: str
    headers: dict[str, str]
    create: Callable[[httpx.Client, int], str]
    get: Callable[[httpx.Client, str], None]
    list: Callable[[httpx.Client], None]


RETRY_STATUSES = {429, 503}
RETRY_WAIT = 0.1
_retries = threading.local()


def _send(request: Callable[[], httpx.Response], expected: int = 200) -> httpx.Response:
    """Send, retrying 429/503 after ``RETRY_WAIT`` s (Prefect's own client retries these, with
    longer waits); the retries of the calling thread are counted in ``_retries.count``."""
    for _ in range(50):
        response = request()
        if response.status_code not in RETRY_STATUSES:
            break
        _retries.count = getattr(_retries, "count", 0) + 1
        time.sleep(RETRY_WAIT)
    return _check(response, expected)


def _check(response: httpx.Response, expected: int = 200) -> httpx.Response:
    if response.status_code != expected:
        raise RuntimeError(
            f"{response.request.method} {response.request.url} -> {response.status_code}: "
            f"{response.text[:300]}"
        )
    return response


def _wait_until_up(
    process: subprocess.Popen[bytes], url: str, timeout: float, log_file: Path
) -> float:
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited; its log:\n{log_file.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code < 500:
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")
        time.sleep(0.2)


@contextlib.contextmanager
def _process(command: list[str], env: dict[str, str], log_file: Path) -> Iterator[Any]:
    with log_file.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def ours(
    tmp: Path,
    workflows: tuple[str, ...] = ("bench.overhead:noop",),
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[Server, str]]:
    """Our API on a fresh catalog with ``workflows`` (entrypoints) registered; yields the server
    and an API key. ``extra_env`` goes to the server process only (e.g. ``PREFECT_API_URL``)."""
    home = tmp / "ours"
    home.mkdir()
    os.environ["PREFECT_JOBS_HOME"] = str(home)
    os.environ["PREFECT_JOBS_DATABASE_URL"] = f"sqlite:///{home / 'catalog.db'}"
    os.environ["PREFECT_JOBS_WORKFLOW_MODULES"] = "[]"

    import jobs_plugin as jp
    from jobs_plugin import db

    for entrypoint in workflows:
        jp.register_workflow(entrypoint)
    _, key = jp.create_api_key()
    db.dispose_all()  # the server process is the one writer while measuring

    port = free_port()
    command = [sys.executable, "-c", OURS_LAUNCHER, str(port)]
    with _process(command, {**os.environ, **(extra_env or {})}, tmp / "ours.log") as process:
        base = f"http://127.0.0.1:{port}"
        took = _wait_until_up(process, f"{base}/v1/openapi.json", 60, tmp / "ours.log")
        log(f"ours: up in {took:.1f} s on port {port}")

        def create(client: httpx.Client, i: int) -> str:
            response = _send(lambda: client.post("/v1/jobs", json=JOB_BODY), 201)
            job_id: str = response.json()["data"]["id"]
            return job_id

        def get(client: httpx.Client, job_id: str) -> None:
            _send(lambda: client.get(f"/v1/jobs/{job_id}"))

        def list_(client: httpx.Client) -> None:
            _send(lambda: client.get("/v1/jobs", params={"pageSize": LIST_SIZE}))

        auth = {"Authorization": f"Bearer {key}"}
        yield Server("ours", base, auth, create, get, list_), key


@contextlib.contextmanager
def prefect(tmp: Path) -> Iterator[Server]:
    """``prefect server start`` on a fresh SQLite database."""
    home = tmp / "prefect"
    home.mkdir()
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_API_", "PREFECT_JOBS_"))
    }
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
    )
    prefect_cli = str(Path(sys.executable).parent / "prefect")
    command = [prefect_cli, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with _process(command, env, tmp / "prefect.log") as process:
        base = f"http://127.0.0.1:{port}"
        took = _wait_until_up(process, f"{base}/api/health", 180, tmp / "prefect.log")
        log(f"prefect: up in {took:.1f} s on port {port}")
        with httpx.Client(base_url=base) as client:
            flow_id = _check(client.post("/api/flows/", json={"name": "bench"}), 201).json()["id"]

        def create(client: httpx.Client, i: int) -> str:
            body = {"flow_id": flow_id, "name": f"bench-{i}"}
            response = _send(lambda: client.post("/api/flow_runs/", json=body), 201)
            run_id: str = response.json()["id"]
            return run_id

        def get(client: httpx.Client, run_id: str) -> None:
            _send(lambda: client.get(f"/api/flow_runs/{run_id}"))

        def list_(client: httpx.Client) -> None:
            _send(lambda: client.post("/api/flow_runs/filter", json={"limit": LIST_SIZE}))

        yield Server("prefect", base, {}, create, get, list_)


# --------------------------------------------------------------------------- load


@dataclass
class Result:
    server: str
    operation: str
    requests: int
    concurrency: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    retries: int


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_operation(
    server: Server, operation: str, requests: int, concurrency: int, ids: list[str]
) -> Result:
    """``requests`` calls of ``operation`` spread over ``concurrency`` threads (one keep-alive
    client each); created ids are appended to ``ids``, which ``get`` cycles through."""
    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    created: list[list[str]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    retries = [0] * concurrency
    barrier = threading.Barrier(concurrency + 1)

    def worker(index: int) -> None:
        with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60) as client:
            # one request outside the timing opens the connection
            server.list(client)
            barrier.wait()
            _retries.count = 0
            try:
                for n in range(shares[index]):
                    start = time.perf_counter()
                    if operation == "create":
                        created[index].append(server.create(client, n))
                    elif operation == "get":
                        server.get(client, ids[(index * 7919 + n) % len(ids)])
                    else:
                        server.list(client)
                    latencies[index].append(time.perf_counter() - start)
            except BaseException as exc:
                errors.append(exc)
            retries[index] = _retries.count

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    for batch in created:
        ids.extend(batch)
    samples = [s for batch in latencies for s in batch]
    return Result(
        server=server.name,
        operation=operation,
        requests=requests,
        concurrency=concurrency,
        seconds=round(seconds, 3),
        rps=round(requests / seconds, 1),
        p50_ms=round(statistics.median(samples) * 1000, 2),
        p95_ms=round(_percentile(samples, 0.95) * 1000, 2),
        retries=sum(retries),
    )


def measure(servers: list[Server], requests: int, concurrency: int, warmup: int) -> list[Result]:
    results: list[Result] = []
    ids: dict[str, list[str]] = {server.name: [] for server in servers}
    for server in servers:  # warm-up: fills the tables a little and every code path
        for operation in OPERATIONS:
            run_operation(server, operation, warmup, 1, ids[server.name])
    for operation in OPERATIONS:
        for server in servers:
            result = run_operation(server, operation, requests, concurrency, ids[server.name])
            log(
                f"{server.name:8} {operation:6} {result.rps:8.1f} req/s  "
                f"p50 {result.p50_ms:6.2f} ms  p95 {result.p95_ms:6.2f} ms  "
                f"retries {result.retries}"
            )
            results.append(result)
    return results


def table(results: list[Result], out: TextIO) -> None:
    by = {(r.server, r.operation): r for r in results}
    n, c = results[0].requests, results[0].concurrency
    print(f"\n{n} requests per operation, {c} concurrent client(s), SQLite on both\n", file=out)
    print(
        "| operation | ours req/s | Prefect req/s | ratio | ours p50/p95 ms | Prefect p50/p95 ms |",
        file=out,
    )
    print("|---|---|---|---|---|---|", file=out)
    retried = [f"{r.server} {r.operation}: {r.retries}" for r in results if r.retries]
    for operation in OPERATIONS:
        mine, theirs = by.get(("ours", operation)), by.get(("prefect", operation))
        ratio = f"{mine.rps / theirs.rps:.2f}x" if mine and theirs else "-"
        print(
            f"| {operation} | {mine.rps if mine else '-'} | {theirs.rps if theirs else '-'} | "
            f"{ratio} | {f'{mine.p50_ms} / {mine.p95_ms}' if mine else '-'} | "
            f"{f'{theirs.p50_ms} / {theirs.p95_ms}' if theirs else '-'} |",
            file=out,
        )
    if retried:
        print(f"\n429/503 answers retried (after {RETRY_WAIT} s): {', '.join(retried)}", file=out)


# --------------------------------------------------------------------------- profile


def profile(key: str, calls: int, out: TextIO) -> dict[str, float]:
    """Replay each operation's route handler in this process under cProfile, on the catalog
    the server used: authentication, the handler, FastAPI's encoding of the result. Returns
    the in-process milliseconds per call of each operation."""
    from fastapi import Response
    from fastapi.encoders import jsonable_encoder

    import jobs_plugin as jp
    from jobs_plugin.models import JobCreate
    from jobs_plugin.rest.routes import jobs as routes

    job_ids: list[str] = []

    def create() -> Any:
        organization, actor = jp.api.authenticate(key)
        response = routes.create_job(JobCreate.model_validate(JOB_BODY), organization, actor)
        result = json.loads(bytes(response.body))
        job_ids.append(result["data"]["id"])
        return result

    def get() -> Any:
        return routes.get_job(
            job_ids[len(job_ids) // 2], jp.api.organization_for_key(key), Response()
        )

    def list_() -> Any:
        organization = jp.api.organization_for_key(key)
        return routes.list_jobs(
            organization,
            page_number=1,
            page_size=LIST_SIZE,
            sort_direction="desc",
            status=None,
            source_provider=None,
            type=None,
            operation=None,
        )

    per_call: dict[str, float] = {}
    for name, handler in (("create", create), ("get", get), ("list", list_)):
        handler()  # warm caches and lazy imports outside the profile
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for _ in range(calls):
            json.dumps(jsonable_encoder(handler()))
        profiler.disable()
        per_call[name] = (time.perf_counter() - started) / calls * 1000
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream)
        stats.sort_stats("cumulative").print_stats(22)
        print(f"\n===== {name}: {per_call[name]:.2f} ms per call in-process =====", file=out)
        print(stream.getvalue().split("\n", 6)[-1], file=out)
    return per_call


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=500, help="per operation")
    parser.add_argument("-c", "--concurrency", type=int, default=1, help="client threads")
    parser.add_argument("--warmup", type=int, default=50, help="requests per operation first")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, table on stderr")
    parser.add_argument("--skip-prefect", action="store_true", help="measure ours only")
    parser.add_argument(
        "--profile", type=int, nargs="?", const=200, default=0, metavar="CALLS",
        help="then profile our handlers in-process (default 200 calls each)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="prefect-jobs-bench-api-"))
    try:
        with contextlib.ExitStack() as stack:
            mine, key = stack.enter_context(ours(tmp))
            servers = [mine]
            if not args.skip_prefect:
                servers.append(stack.enter_context(prefect(tmp)))
            results = measure(servers, args.requests, args.concurrency, args.warmup)
        out = sys.stderr if args.json else sys.stdout
        table(results, out)
        in_process = profile(key, args.profile, sys.stderr) if args.profile else {}
        if args.json:
            by = {(r.server, r.operation): r for r in results}
            ratios = {
                op: round(by[("ours", op)].rps / by[("prefect", op)].rps, 2)
                for op in OPERATIONS
                if ("prefect", op) in by
            }
            document = {
                "results": [asdict(r) for r in results],
                "ratios": ratios,
                "in_process_ms_per_call": {k: round(v, 3) for k, v in in_process.items()},
                "cpus": os.cpu_count(),
            }
            print(json.dumps(document, indent=2))
    except BaseException:
        for name in ("ours.log", "prefect.log"):
            if (tmp / name).exists():
                log(f"--- last lines of {name}:\n{(tmp / name).read_text()[-2500:]}")
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
