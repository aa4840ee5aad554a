"""Latency of the live event stream: from a workflow finishing to an SSE client receiving it.

One run of the bench:

* starts ``prefect server start`` (SQLite, in a temporary folder) and our API server pointed
  at it (``PREFECT_API_URL``), on a fresh catalog with one workflow, ``bench.stamp``: its last
  line writes ``time.time()`` to a file named after the run;
* opens ``GET /v1/events/stream`` (bearer key, ``jobId`` filter) in a reader thread;
* executes the job over HTTP ``--runs`` times, one run after the other, each time waiting for
  ``job:completed`` on the stream.

Measured, on the same machine clock:

* **event latency**: receive time minus the event's ``createdAt`` (the catalog write), for every
  event of the runs (``job:waiting``, ``job:started``, ``job:updated``, ``job:completed``); the
  goal is p95 <= 100 ms over at least 200 events;
* **workflow end -> job:updated / job:completed**: receive time of the run's last
  ``job:updated`` (the one for the workflow finishing) and of its ``job:completed``, minus the
  time the workflow's last line wrote. This includes the engine's own work after the workflow
  returns (Prefect state changes, catalog writes), so it is what a client actually waits.

    .venv/bin/python bench/events.py               # 40 runs (about 200 events)
    .venv/bin/python bench/events.py --runs 100 --json
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

if __name__ == "__main__":
    # The workflow below must be importable as ``bench.events:stamp`` by the server.
    from bench.events import main as _main

    sys.exit(_main())

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import queue  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
from prefect import flow  # noqa: E402

from bench.api import log, ours, prefect  # noqa: E402
from jobs_plugin import get_run_context, workflow  # noqa: E402

GOAL_P95_MS = 100.0
STREAM_PATH = "/v1/events/stream"


@workflow(id="bench.stamp")
@flow(name="bench-stamp")
async def stamp(directory: str) -> None:
    """Does nothing but write, as its very last line, the time it finished."""
    Path(directory, get_run_context().run_id).write_text(repr(time.time()))


# --------------------------------------------------------------------------- the SSE reader


@dataclass
class Received:
    at: float
    cursor: str
    topic: str
    event: dict[str, Any]


class StreamReader(threading.Thread):
    """Reads ``GET /v1/events/stream`` and queues every message with its receive time."""

    def __init__(self, base_url: str, headers: dict[str, str], params: dict[str, Any]) -> None:
        super().__init__(name="sse-reader", daemon=True)
        self.messages: queue.Queue[Received | BaseException] = queue.Queue()
        self.opened = threading.Event()
        self.pings = 0
        self._client = httpx.Client(base_url=base_url, headers=headers, timeout=None)
        self._params = params
        self._stop = threading.Event()

    def run(self) -> None:
        try:
            with self._client.stream("GET", STREAM_PATH, params=self._params) as response:
                if response.status_code != 200:
                    response.read()
                    raise RuntimeError(
                        f"GET {STREAM_PATH} -> {response.status_code}: {response.text[:300]}"
                        + (
                            " (the SSE endpoint is not there: this bench needs it)"
                            if response.status_code in (404, 405)
                            else ""
                        )
                    )
                self.opened.set()
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line == "":
                        if "data" in fields:
                            self.messages.put(
                                Received(
                                    at=time.time(),
                                    cursor=fields.get("id", ""),
                                    topic=fields.get("event", "message"),
                                    event=json.loads(fields["data"]),
                                )
                            )
                        fields = {}
                    elif line.startswith(":"):
                        self.pings += 1
                    else:
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        fields[name] = f"{fields[name]}\n{value}" if name in fields else value
        except BaseException as exc:
            if not self._stop.is_set():
                self.messages.put(exc)
        finally:
            self.opened.set()

    def next(self, timeout: float) -> Received:
        item = self.messages.get(timeout=timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._client.close()


# --------------------------------------------------------------------------- measuring


def _created_at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["createdAt"].replace("Z", "+00:00")).timestamp()


def _summary(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)

    return {
        "count": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": pct(0.95),
        "max_ms": round(ordered[-1], 1),
    }


def measure(runs: int, tmp: Path) -> dict[str, Any]:
    stamps = tmp / "stamps"
    stamps.mkdir()
    with contextlib.ExitStack() as stack:
        prefect_server = stack.enter_context(prefect(tmp))
        mine, _ = stack.enter_context(
            ours(
                tmp,
                workflows=("bench.events:stamp",),
                extra_env={"PREFECT_API_URL": f"{prefect_server.base_url}/api"},
            )
        )
        http = stack.enter_context(
            httpx.Client(base_url=mine.base_url, headers=mine.headers, timeout=60)
        )
        body = {
            "name": "events bench",
            "jobConfigJson": {
                "workflowExecutionOrder": [
                    {"workflowId": "bench.stamp", "parameters": {"directory": str(stamps)}}
                ]
            },
        }
        created = http.post("/v1/jobs", json=body)
        if created.status_code != 201:
            raise RuntimeError(f"POST /v1/jobs -> {created.status_code}: {created.text}")
        job_id = created.json()["data"]["id"]

        reader = StreamReader(mine.base_url, mine.headers, {"jobId": job_id})
        reader.start()
        stack.callback(reader.close)
        reader.opened.wait(30)
        if not reader.messages.empty():
            reader.next(0)  # raises what the reader met (e.g. no SSE endpoint)

        event_latency: dict[str, list[float]] = {}
        to_updated: list[float] = []
        to_completed: list[float] = []
        for n in range(runs + 1):  # the first run warms up Prefect and is not counted
            executed = http.post(f"/v1/jobs/{job_id}/execute")
            if executed.status_code != 200:
                raise RuntimeError(f"execute -> {executed.status_code}: {executed.text}")
            run_id = executed.headers["X-Run-Id"]
            seen: list[Received] = []
            while True:
                try:
                    message = reader.next(timeout=120)
                except queue.Empty:
                    raise RuntimeError(
                        f"run {run_id}: no event for 120 s (seen {[m.topic for m in seen]})"
                    ) from None
                if message.event.get("runId") != run_id:
                    continue
                seen.append(message)
                if message.topic in ("job:completed", "job:failed", "job:canceled"):
                    break
            if seen[-1].topic != "job:completed":
                raise RuntimeError(f"run {run_id} ended {seen[-1].topic}: {seen[-1].event}")
            if n == 0:
                continue
            for message in seen:
                latency = (message.at - _created_at(message.event)) * 1000
                event_latency.setdefault(message.topic, []).append(latency)
            finished_at = float((stamps / run_id).read_text())
            last_updated = [m for m in seen if m.topic == "job:updated"][-1]
            to_updated.append((last_updated.at - finished_at) * 1000)
            to_completed.append((seen[-1].at - finished_at) * 1000)
            if n % 10 == 0:
                log(f"{n}/{runs} runs")

    every = [x for samples in event_latency.values() for x in samples]
    return {
        "runs": runs,
        "event_latency": _summary(every),
        "event_latency_by_topic": {t: _summary(s) for t, s in sorted(event_latency.items())},
        "workflow_end_to_job_updated": _summary(to_updated),
        "workflow_end_to_job_completed": _summary(to_completed),
        "goal_p95_ms": GOAL_P95_MS,
        "goal_met": _summary(every)["p95_ms"] <= GOAL_P95_MS,
        "poll_seconds": os.environ.get("PREFECT_JOBS_EVENT_POLL_SECONDS", "default"),
    }


def report(result: dict[str, Any], out: Any) -> None:
    print(
        f"\n{result['runs']} runs of a one-workflow job, SSE client on the same machine\n", file=out
    )
    print("| measure | events | p50 ms | p95 ms | max ms |", file=out)
    print("|---|---|---|---|---|", file=out)
    rows = [("event: receive - createdAt (all)", result["event_latency"])]
    rows += [(f"  {topic}", s) for topic, s in result["event_latency_by_topic"].items()]
    rows += [
        ("workflow last line -> job:updated", result["workflow_end_to_job_updated"]),
        ("workflow last line -> job:completed", result["workflow_end_to_job_completed"]),
    ]
    for name, s in rows:
        print(
            f"| {name} | {s['count']} | {s['p50_ms']} | {s['p95_ms']} | {s['max_ms']} |", file=out
        )
    verdict = "PASS" if result["goal_met"] else "FAIL"
    print(
        f"\ngoal: event p95 <= {GOAL_P95_MS:.0f} ms: {verdict} "
        f"({result['event_latency']['p95_ms']} ms)",
        file=out,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="runs measured (5 events each)")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, table on stderr")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="prefect-jobs-bench-events-"))
    try:
        result = measure(args.runs, tmp)
    except Exception as exc:
        for name in ("ours.log", "prefect.log"):
            if (tmp / name).exists():
                log(f"--- last lines of {name}:\n{(tmp / name).read_text()[-2500:]}")
        log(f"error: {exc}")
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(result, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0
