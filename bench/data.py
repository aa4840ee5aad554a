"""Extract and export of a generated CSV (10 columns) through real jobs, side by side with the
``sqlite3`` command line's ``.import`` and ``.mode csv`` export of the same file.

Each measurement runs in a fresh child process, so its peak memory (max RSS) is its own, in
``--repeat`` rounds of the baseline then ours (each side's best time is reported, and every
round's ratios beside it: these machines are noisy):
ours runs the operation job (Prefect's temporary local server is started and warmed up
first, outside the timing); the baseline is the ``sqlite3`` binary (or, where it is missing,
Python's ``sqlite3`` module with ``executemany``, said so in the report). A third child
splits an extract's time without Prefect (csv module alone, prepare, commit), as multiples
of the baseline's import time.

    .venv/bin/python bench/data.py                       # 100k and 1M rows, 3 rounds
    .venv/bin/python bench/data.py --rows 20000 --repeat 1   # a quick run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

HEADER = ["id", "name", "email", "amount", "quantity", "active", "joined", "city", "code", "note"]
CITIES = ["Paris", "Lyon", "Zürich", "Montréal", "Berlin", "Oslo", "Lisbon", "Porto"]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    start = date(2020, 1, 1)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for i in range(rows):
            writer.writerow(
                [
                    i,
                    f"name {i}",
                    f"user{i}@example.com",
                    f"{rnd.random() * 1000:.2f}",
                    rnd.randint(1, 50),
                    rnd.choice(("true", "false")),
                    (start + timedelta(days=i % 2000)).isoformat(),
                    rnd.choice(CITIES),
                    f"C{rnd.randint(0, 99999):05d}",
                    "a note, with a comma" if i % 10 == 0 else "plain",
                ]
            )


def _max_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


# --------------------------------------------------------------------------- children


def child_ours(csv_path: str, home: str, chunk: int, reader: str = "native") -> dict[str, Any]:
    """The extract and export jobs; ``reader`` "csv" turns the Arrow reader off."""
    os.environ["PREFECT_JOBS_HOME"] = home
    os.environ["PREFECT_JOBS_NATIVE_CSV"] = "true" if reader == "native" else "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    import jobs_plugin as jp
    from jobs_plugin.data import api as data

    def run(operation: str, source: str, job_type: str, config: dict[str, Any]) -> Any:
        job = jp.create_job(
            name=f"bench {operation}",
            type=job_type,
            operation=operation,
            source=source,
            config=config,
        )
        t0 = time.perf_counter()
        result = jp.execute(job.id)
        elapsed = time.perf_counter() - t0
        assert result.status.value == "COMPLETED", result.outcome
        return result, elapsed

    with prefect_test_harness(server_startup_timeout=180):
        warm = data.upload_file(b"a,b\n1,2\n", name="warm.csv")
        run("extract", warm.id, "file", {})
        rss_before = _max_rss_mb(resource.RUSAGE_SELF)
        file = data.upload_file(csv_path)
        extracted, extract_s = run("extract", file.id, "file", {"chunkSize": chunk})
        rss_extract = _max_rss_mb(resource.RUSAGE_SELF)
        sheet_id = extracted.outcome["sheetIds"][0]
        exported, export_s = run("export", sheet_id, "sheet", {"chunkSize": chunk})
        out_size = data.get_file(exported.outcome["fileId"]).size
        return {
            "extract_s": extract_s,
            "export_s": export_s,
            "records": extracted.outcome["recordCount"],
            "parts": extracted.parts,
            "export_bytes": out_size,
            "rss_after_warmup_mb": rss_before,
            "rss_extract_mb": rss_extract,
            "rss_mb": _max_rss_mb(resource.RUSAGE_SELF),
        }


def child_floor(csv_path: str, home: str, chunk: int) -> dict[str, Any]:
    """Where an extract's time goes, without Prefect: Python's csv module reading the file and
    nothing else; then the extract's two halves run one after the other on every chunk (the
    job overlaps them on two threads): preparing (read, validate, build records) and
    committing (JSON encoding, the SQLite insert, the checkpoint)."""
    import gc
    import itertools

    os.environ["PREFECT_JOBS_HOME"] = home
    from jobs_plugin.data import formats, operations, store

    gc.set_threshold(operations.BULK_GC_THRESHOLD, *gc.get_threshold()[1:])
    t0 = time.perf_counter()
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        while list(itertools.islice(reader, chunk)):
            pass
    csv_s = time.perf_counter() - t0
    org, size = "us_org_bench", os.path.getsize(csv_path)
    with open(csv_path, "rb") as stream:
        tables = formats.read_tables(stream, "csv", size)
        state = store.prepare_targets(
            org,
            "bench",
            0,
            workbook_id=None,
            workbook_name="bench",
            plan=operations._plan(org, None, tables),
            state={"table": 0, "rows": 0, "chunks": 0, "records": 0},
        )
        writer = operations._TableWriter(tables[0], store.get_sheet(org, state["targets"][0]))

        def reread() -> tuple[formats.Table, Any]:
            again = open(csv_path, "rb")  # noqa: SIM115 - the chunks close it
            return formats.read_tables(again, "csv", size)[0], again

        chunks = operations._Chunks(writer, lambda: open(csv_path, "rb"), reread)  # noqa: SIM115
        prepare_s = commit_s = 0.0
        while True:
            t0 = time.perf_counter()
            rows = chunks.take(chunk)
            prepare_s += time.perf_counter() - t0
            if not rows:
                break
            t0 = time.perf_counter()
            state = operations._commit_chunk(org, "bench", 0, state, 0, rows)
            commit_s += time.perf_counter() - t0
    return {"csv_s": csv_s, "prepare_s": prepare_s, "commit_s": commit_s}


def child_sqlite_cli(csv_path: str, workdir: str) -> dict[str, Any]:
    db = Path(workdir) / "baseline.db"
    db.unlink(missing_ok=True)  # a fresh table each round
    out = Path(workdir) / "baseline-export.csv"
    t0 = time.perf_counter()
    subprocess.run(["sqlite3", str(db), ".mode csv", f".import {csv_path} t"], check=True)
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(
        ["sqlite3", str(db), ".headers on", ".mode csv", f".output {out}", "SELECT * FROM t;"],
        check=True,
    )
    export_s = time.perf_counter() - t0
    return {
        "extract_s": import_s,
        "export_s": export_s,
        "export_bytes": out.stat().st_size,
        "rss_mb": _max_rss_mb(resource.RUSAGE_CHILDREN),
    }


def child_sqlite_module(csv_path: str, workdir: str) -> dict[str, Any]:
    import sqlite3

    (Path(workdir) / "baseline.db").unlink(missing_ok=True)  # a fresh table each round
    db = sqlite3.connect(Path(workdir) / "baseline.db")
    t0 = time.perf_counter()
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        columns = ", ".join(f'"{c}"' for c in header)
        db.execute(f"CREATE TABLE t ({columns})")
        marks = ", ".join("?" * len(header))
        db.executemany(f"INSERT INTO t VALUES ({marks})", reader)
    db.commit()
    import_s = time.perf_counter() - t0
    out = Path(workdir) / "baseline-export.csv"
    t0 = time.perf_counter()
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        cursor = db.execute("SELECT * FROM t")
        writer.writerow([d[0] for d in cursor.description])
        writer.writerows(cursor)
    export_s = time.perf_counter() - t0
    return {
        "extract_s": import_s,
        "export_s": export_s,
        "export_bytes": out.stat().st_size,
        "rss_mb": _max_rss_mb(resource.RUSAGE_SELF),
    }


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest time of each measure over the rounds, the highest peak memory."""
    best = dict(runs[-1])
    for key in best:
        if key.endswith("_s"):
            best[key] = min(r[key] for r in runs)
        elif key.endswith("_mb"):
            best[key] = max(r[key] for r in runs)
    return best


def _spawn(args: list[str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{result.stderr[-4000:]}")
    last = result.stdout.strip().splitlines()[-1]
    measured: dict[str, Any] = json.loads(last)
    return measured


# --------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="Row counts to run."
    )
    parser.add_argument("--chunk", type=int, default=10_000, help="Rows per chunk (part).")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="Rounds of baseline then ours; each side's best time is reported (noisy machines).",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder.")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "ours":
            measured = child_ours(rest[0], rest[1], int(rest[2]), *rest[3:])
        elif kind == "floor":
            measured = child_floor(rest[0], rest[1], int(rest[2]))
        elif kind == "cli":
            measured = child_sqlite_cli(rest[0], rest[1])
        else:
            measured = child_sqlite_module(rest[0], rest[1])
        print(json.dumps(measured))
        return

    baseline = "cli" if shutil.which("sqlite3") else "module"
    label = (
        "sqlite3 CLI (.import / .mode csv)"
        if baseline == "cli"
        else "Python sqlite3 executemany (no sqlite3 binary found: apt-get install sqlite3)"
    )
    scratch = Path(tempfile.mkdtemp(prefix="prefect-jobs-bench-"))
    print(f"baseline: {label}; chunk: {args.chunk} rows; scratch: {scratch}")
    header = (
        f"{'rows':>9} {'MB':>6} | {'extract r/s':>11} {'sqlite3 r/s':>11} {'ratio':>5} | "
        f"{'export r/s':>11} {'sqlite3 r/s':>11} {'ratio':>5} | {'peak MB':>7} {'sqlite3 MB':>10}"
    )
    print(header)
    print("-" * len(header))
    try:
        for rows in args.rows:
            folder = scratch / str(rows)
            folder.mkdir()
            path = folder / "data.csv"
            generate(path, rows)
            size_mb = path.stat().st_size / 1e6
            bases, ourses = [], []
            for round_ in range(args.repeat):  # alternate, so both sides see the same noise
                bases.append(_spawn([baseline, str(path), str(folder)]))
                home = str(folder / f"home-{round_}")
                ourses.append(_spawn(["ours", str(path), home, str(args.chunk)]))
                assert ourses[-1]["records"] == rows, ourses[-1]
                shutil.rmtree(home, ignore_errors=True)
            base, ours = _best(bases), _best(ourses)
            csv_home = str(folder / "csv-home")
            by_csv = _spawn(["ours", str(path), csv_home, str(args.chunk), "csv"])
            assert by_csv["records"] == rows, by_csv
            floor = _spawn(["floor", str(path), str(folder / "floor-home"), str(args.chunk)])
            ex, bex = rows / ours["extract_s"], rows / base["extract_s"]
            out, bout = rows / ours["export_s"], rows / base["export_s"]
            print(
                f"{rows:>9} {size_mb:>6.1f} | {ex:>11,.0f} {bex:>11,.0f} {ex / bex:>5.2f} | "
                f"{out:>11,.0f} {bout:>11,.0f} {out / bout:>5.2f} | "
                f"{ours['rss_mb']:>7.0f} {base['rss_mb']:>10.0f}"
            )
            print(
                f"          csv module reader (PREFECT_JOBS_NATIVE_CSV=false): extract "
                f"{rows / by_csv['extract_s']:,.0f} r/s ({rows / by_csv['extract_s'] / bex:.2f}), "
                f"export {rows / by_csv['export_s']:,.0f} r/s "
                f"({rows / by_csv['export_s'] / bout:.2f}), peak {by_csv['rss_mb']:.0f} MB"
            )
            spread = [
                f"{b['extract_s'] / o['extract_s']:.2f}/{b['export_s'] / o['export_s']:.2f}"
                for b, o in zip(bases, ourses, strict=True)
            ]
            print(f"          each round's extract/export ratios: {', '.join(spread)}")
            print(f"          ours: {json.dumps(ours)}")
            print(f"          base: {json.dumps(base)}")
            print(
                "          extract without Prefect, as multiples of sqlite3's import time: "
                f"csv module read alone {floor['csv_s'] / base['extract_s']:.2f}x, "
                f"prepare {floor['prepare_s'] / base['extract_s']:.2f}x, "
                f"commit {floor['commit_s'] / base['extract_s']:.2f}x "
                f"(ours in the job: {ours['extract_s'] / base['extract_s']:.2f}x)"
            )
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
