"""The POS workflow library: the simulated POS, each workflow on its own, and the demo job."""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
import subprocess
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import pytest

import jobs_plugin as jp
from flows._posdata import (
    CREDENTIALS_NAME,
    BusinessDateUnavailable,
    PosAuthenticationError,
    connect,
    ensure_pos,
)
from flows.pos import (
    authenticate,
    demo_job_spec,
    download_gift_cards,
    extract_payments,
    extract_sales,
)
from jobs_plugin import JobStatus, WorkflowRunStatus

DAY = "2026-11-22"


def _run(workflow: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a workflow directly, as a plain Prefect flow outside any job."""
    result: dict[str, Any] = asyncio.run(workflow(*args, **kwargs))
    return result


def _cents(text: str) -> int:
    whole, _, frac = text.lstrip("-").partition(".")
    value = int(whole) * 100 + int(frac)
    return -value if text.startswith("-") else value


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _query(pos_dir: Path, sql: str, *params: Any) -> list[sqlite3.Row]:
    conn = connect(pos_dir)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _audit(pos_dir: Path) -> list[tuple[str, str, str]]:
    rows = _query(pos_dir, "SELECT username, action, detail FROM audit_log ORDER BY id")
    return [(r["username"], r["action"], json.loads(r["detail"])["purpose"]) for r in rows]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.part"))


@pytest.fixture
def pos(tmp_path: Path) -> Path:
    folder = tmp_path / "pos"
    ensure_pos(folder)
    return folder


# --------------------------------------------------------------------------- the POS


def test_ensure_pos_is_deterministic_idempotent_and_race_safe(tmp_path: Path) -> None:
    first, second, raced = tmp_path / "a", tmp_path / "b", tmp_path / "raced"
    db = ensure_pos(first)
    ensure_pos(second)
    mtime = db.stat().st_mtime_ns
    assert ensure_pos(first) == db and db.stat().st_mtime_ns == mtime  # not rebuilt

    code = "import sys; from flows._posdata import ensure_pos; ensure_pos(sys.argv[1])"
    racers = [subprocess.Popen([sys.executable, "-c", code, str(raced)]) for _ in range(4)]
    assert [p.wait(timeout=60) for p in racers] == [0, 0, 0, 0]

    stale = tmp_path / "stale"  # left by an older version of the library: rebuilt
    stale.mkdir()
    (stale / "pos.db").write_text("not a database")
    (stale / CREDENTIALS_NAME).write_text("{}")
    ensure_pos(stale)

    dumps = []
    for folder in (first, second, raced, stale):
        conn = sqlite3.connect(folder / "pos.db")
        dumps.append("\n".join(conn.iterdump()))
        conn.close()
        assert _leftovers(folder) == []
    assert dumps[0] == dumps[1] == dumps[2] == dumps[3]
    creds = {(f / CREDENTIALS_NAME).read_text() for f in (first, second, raced, stale)}
    assert len(creds) == 1

    per_day = _query(first, "SELECT business_date, COUNT(*) FROM sales GROUP BY 1 ORDER BY 1")
    assert len(per_day) == 7 and all(200 <= n <= 400 for _, n in per_day)
    methods = {r[0] for r in _query(first, "SELECT DISTINCT method FROM payments")}
    assert methods == {"cash", "card", "mobile", "gift_card"}


def _day_rows(pos_dir: Path, day: str) -> list[tuple[Any, ...]]:
    rows = []
    for table in ("sales", "gift_card_transactions"):
        sql = f"SELECT * FROM {table} WHERE business_date = ? ORDER BY id"
        rows += [tuple(r) for r in _query(pos_dir, sql, day)]
    sql = "SELECT p.* FROM payments p JOIN sales s ON s.id = p.sale_id WHERE s.business_date = ?"
    return rows + [tuple(r) for r in _query(pos_dir, sql + " ORDER BY p.id", day)]


def test_a_past_day_is_closed_on_first_request_the_same_way_everywhere(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    ensure_pos(second)
    code = (
        "import sys; from datetime import date\n"
        "from flows._posdata import PosSession, ensure_pos, read_credentials\n"
        "d = sys.argv[1]; ensure_pos(d)\n"
        "for day in sys.argv[2:]:\n"
        "    with PosSession.login(d, read_credentials(d), purpose='test') as s:\n"
        "        s.require_business_date(date.fromisoformat(day))"
    )
    args = [sys.executable, "-c", code]
    subprocess.run([*args, str(second), "2026-10-02", "2026-10-01"], check=True, timeout=60)
    racers = [subprocess.Popen([*args, str(first), "2026-10-01"]) for _ in range(3)]
    assert [p.wait(timeout=60) for p in racers] == [0, 0, 0]

    rows = _day_rows(first, "2026-10-01")
    assert len(rows) > 200 and rows == _day_rows(second, "2026-10-01")  # closed once, same data
    days = _query(first, "SELECT COUNT(*) FROM business_days WHERE business_date < ?", DAY)
    assert days[0][0] == 1 + 6  # the seeded week before DAY, and the one day asked for


# --------------------------------------------------------------------------- each workflow


def test_authenticate_logs_in_and_audits(pos: Path) -> None:
    result = _run(authenticate, pos_dir=str(pos), business_date=DAY)
    assert result == {"username": "reports-bot", "businessDate": DAY, "stores": ["DT", "PE", "VA"]}
    assert _audit(pos) == [("reports-bot", "login", "authenticate")]
    open_sessions = _query(pos, "SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL")
    assert open_sessions[0][0] == 0  # logged out again


def test_bad_credentials_and_unknown_days_fail_clearly(pos: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"username": "reports-bot", "password": "hunter2"}))
    with pytest.raises(PosAuthenticationError, match="refused login for 'reports-bot'"):
        _run(authenticate, str(pos), DAY, credentials_path=str(wrong))
    disabled = tmp_path / "disabled.json"
    disabled.write_text(json.dumps({"username": "former-manager", "password": "x"}))
    with pytest.raises(PosAuthenticationError, match="refused login for 'former-manager'"):
        _run(authenticate, str(pos), DAY, credentials_path=str(disabled))
    conn = sqlite3.connect(pos / "pos.db")
    with conn:  # the POS admin disables the reporting account
        conn.execute("UPDATE users SET active = 0 WHERE username = 'reports-bot'")
    conn.close()
    with pytest.raises(PosAuthenticationError, match="account disabled"):
        _run(authenticate, str(pos), DAY)
    assert _audit(pos) == [
        ("reports-bot", "login_failed", "authenticate"),
        ("former-manager", "login_failed", "authenticate"),
        ("reports-bot", "login_failed", "authenticate"),
    ]
    conn = sqlite3.connect(pos / "pos.db")
    with conn:
        conn.execute("UPDATE users SET active = 1 WHERE username = 'reports-bot'")
    conn.close()

    out = tmp_path / "out"
    with pytest.raises(PosAuthenticationError):
        _run(extract_sales, str(pos), DAY, str(out), credentials_path=str(wrong))
    today = date.today().isoformat()
    with pytest.raises(BusinessDateUnavailable, match=f"{today}: it is not closed yet"):
        _run(extract_payments, str(pos), today, str(out))
    with pytest.raises(BusinessDateUnavailable, match="the POS went live on 2025-01-01"):
        _run(download_gift_cards, str(pos), "2024-12-31", str(out))
    with pytest.raises(ValueError, match="ISO date"):
        _run(extract_sales, str(pos), "22/11/2026", str(out))
    assert not out.exists()  # nothing written


def test_extract_sales_matches_the_pos(pos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run(extract_sales, str(pos), DAY, str(out))
    expected = {
        r["code"]: (r["n"], r["total"])
        for r in _query(
            pos,
            "SELECT st.code, COUNT(*) AS n, SUM(s.total_cents) AS total FROM sales s "
            "JOIN stores st ON st.id = s.store_id WHERE s.business_date = ? GROUP BY st.code",
            DAY,
        )
    }
    rows = _csv(out / DAY / "sales.csv")
    got: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        got[row["store_code"]][0] += 1
        got[row["store_code"]][1] += _cents(row["total"])
        assert _cents(row["subtotal"]) + _cents(row["tax"]) == _cents(row["total"])
    assert {k: tuple(v) for k, v in got.items()} == expected
    assert len({r["ticket"] for r in rows}) == len(rows)

    summary = json.loads((out / DAY / "sales_summary.json").read_text())
    assert summary["sales"] == result["sales"] == len(rows)
    assert summary["totalCents"] == sum(total for _, total in expected.values())
    assert {s["storeCode"]: (s["sales"], s["totalCents"]) for s in summary["stores"]} == expected
    assert all(len(s["topProducts"]) == 3 for s in summary["stores"])
    assert _audit(pos) == [("reports-bot", "login", "extract-sales")]  # it logged in itself


def test_extract_payments_reconciles_with_sales(pos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run(extract_payments, str(pos), DAY, str(out))
    rows = _csv(out / DAY / "payments.csv")
    expected = {
        (r["code"], r["method"]): (r["n"], r["amount"])
        for r in _query(
            pos,
            "SELECT st.code, p.method, COUNT(*) AS n, SUM(p.amount_cents) AS amount "
            "FROM payments p JOIN sales s ON s.id = p.sale_id JOIN stores st ON st.id = s.store_id"
            " WHERE s.business_date = ? GROUP BY st.code, p.method",
            DAY,
        )
    }
    got = {
        (r["store_code"], r["method"]): (int(r["transactions"]), _cents(r["amount"])) for r in rows
    }
    assert got == expected
    sales_total = _query(pos, "SELECT SUM(total_cents) FROM sales WHERE business_date = ?", DAY)
    assert result["amountCents"] == sum(a for _, a in got.values()) == sales_total[0][0]


def test_download_gift_cards_matches_the_pos(pos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run(download_gift_cards, str(pos), DAY, str(out))
    expected = _query(
        pos,
        "SELECT id, card_number, amount_cents FROM gift_card_transactions "
        "WHERE business_date = ? ORDER BY id",
        DAY,
    )
    path = out / DAY / "gift_cards.csv"
    rows = sorted(_csv(path), key=lambda r: int(r["transaction_id"]))
    assert [(int(r["transaction_id"]), _cents(r["amount"])) for r in rows] == [
        (e["id"], e["amount_cents"]) for e in expected
    ]
    assert result["rows"] == len(expected) > 0
    assert {r["kind"] for r in rows} >= {"activate", "redeem"}
    text = path.read_text()
    assert not any(e["card_number"] in text for e in expected)  # masked
    assert all(r["card"][:4] == "6035" and "*" in r["card"] for r in rows)
    assert all(r["ticket"] for r in rows if r["kind"] == "redeem")


# --------------------------------------------------------------------------- the demo job


def test_demo_job_runs_end_to_end(catalog_url: str, tmp_path: Path) -> None:
    pos, out = tmp_path / "pos", tmp_path / "reports"
    job = jp.create_job(demo_job_spec(str(pos), str(out), DAY))
    assert job.name == "Daily sales report extraction" and job.source_provider == "pos-demo"
    run = jp.execute(job.id)

    assert run.status is JobStatus.COMPLETED, [w.error for w in run.workflow_runs]
    steps = [(w.workflow_id, w.status, w.parts, w.processed) for w in run.workflow_runs]
    assert steps == [
        ("pos.authenticate", WorkflowRunStatus.COMPLETED, 1, 1),
        ("pos.extract-sales", WorkflowRunStatus.COMPLETED, 3, 3),
        ("pos.extract-payments", WorkflowRunStatus.COMPLETED, 3, 3),
        ("pos.download-gift-cards", WorkflowRunStatus.COMPLETED, 3, 3),
    ]
    assert run.workflow_runs[3].isolation is jp.Isolation.PROCESS
    assert run.parts == run.processed == 10 and run.progress == 100
    names = {"sales.csv", "sales_summary.json", "payments.csv", "gift_cards.csv"}
    assert {p.name for p in (out / DAY).iterdir()} == names
    sales = _query(pos, "SELECT COUNT(*) FROM sales WHERE business_date = ?", DAY)[0][0]
    assert len(_csv(out / DAY / "sales.csv")) == sales
    # No token passes between workflows: each one logged in to the POS on its own.
    assert [purpose for _, action, purpose in _audit(pos) if action == "login"] == [
        "authenticate",
        "extract-sales",
        "extract-payments",
        "download-gift-cards",
    ]


def test_a_failing_run_leaves_no_half_written_report(catalog_url: str, tmp_path: Path) -> None:
    pos, out = tmp_path / "pos", tmp_path / "reports"
    ensure_pos(pos)
    _run(extract_payments, str(pos), DAY, str(out))  # yesterday's good report
    before = (out / DAY / "payments.csv").read_bytes()

    # The POS books one payment of the last store (Vancouver Mall) a cent off its sale.
    conn = sqlite3.connect(pos / "pos.db")
    with conn:
        conn.execute(
            "UPDATE payments SET amount_cents = amount_cents + 1 WHERE id = (SELECT MAX(p.id) "
            "FROM payments p JOIN sales s ON s.id = p.sale_id "
            "WHERE s.store_id = 3 AND s.business_date = ?)",
            (DAY,),
        )
    conn.close()

    job = jp.create_job(demo_job_spec(str(pos), str(out), DAY))
    run = jp.execute(job.id)
    assert run.status is JobStatus.FAILED
    steps = [(w.workflow_id, w.status, w.processed) for w in run.workflow_runs]
    assert steps == [
        ("pos.authenticate", WorkflowRunStatus.COMPLETED, 1),
        ("pos.extract-sales", WorkflowRunStatus.COMPLETED, 3),
        ("pos.extract-payments", WorkflowRunStatus.FAILED, 2),  # failed on the third store
        ("pos.download-gift-cards", WorkflowRunStatus.NOT_RUN, 0),
    ]
    assert "do not reconcile" in (run.workflow_runs[2].error or "")
    # Two stores had been written when it failed; the report in place is still the whole old one.
    assert (out / DAY / "payments.csv").read_bytes() == before
    assert not (out / DAY / "gift_cards.csv").exists()
    assert _leftovers(out) == []
