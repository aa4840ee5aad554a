"""Workflows of the "Daily sales report extraction" job, against the simulated POS system.

Each workflow stands alone: it makes sure the POS exists, logs in with the POS folder's
credentials (every login lands in the POS's audit log), does its work store by store,
reporting one part per store, and writes its reports atomically into
``output_dir/<business_date>/``.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import date
from pathlib import Path
from typing import Any, TextIO

import anyio.to_thread
from prefect import flow

from flows._posdata import (
    Credentials,
    PosIntegrityError,
    PosSession,
    Store,
    ensure_pos,
    money,
    parse_business_date,
    read_credentials,
)
from jobs_plugin import current_run_context, workflow

__all__ = [
    "AUTHENTICATE",
    "DOWNLOAD_GIFT_CARDS",
    "EXTRACT_PAYMENTS",
    "EXTRACT_SALES",
    "authenticate",
    "demo_job_spec",
    "download_gift_cards",
    "ensure_pos",
    "extract_payments",
    "extract_sales",
]

AUTHENTICATE = "pos.authenticate"
EXTRACT_SALES = "pos.extract-sales"
EXTRACT_PAYMENTS = "pos.extract-payments"
DOWNLOAD_GIFT_CARDS = "pos.download-gift-cards"

SALES_FILE = "sales.csv"
SALES_SUMMARY_FILE = "sales_summary.json"
PAYMENTS_FILE = "payments.csv"
GIFT_CARDS_FILE = "gift_cards.csv"


# --------------------------------------------------------------------------- helpers


@contextmanager
def atomic_open(path: Path) -> Iterator[TextIO]:
    """A text file that appears at ``path`` complete or not at all (temp file + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _login(pos_dir: str, credentials_path: str | None, purpose: str) -> PosSession:
    ensure_pos(pos_dir)
    credentials: Credentials = read_credentials(pos_dir, credentials_path)
    return PosSession.login(pos_dir, credentials, purpose=purpose)


async def _each_store(stores: list[Store], label: str, work: Callable[[Store], str]) -> None:
    """Run ``work`` for each store off the event loop, one reported part per store."""
    ctx = current_run_context()
    if ctx is not None:
        ctx.set_parts(len(stores))
    for number, store in enumerate(stores, 1):
        done = await anyio.to_thread.run_sync(work, store)
        if ctx is not None:
            ctx.advance(1, info=f"{label}: store {number} of {len(stores)} ({store.name}): {done}")


def _report_dir(output_dir: str, day: date) -> Path:
    return Path(output_dir) / day.isoformat()


# --------------------------------------------------------------------------- workflows


@workflow(
    id=AUTHENTICATE,
    description="Log in to the POS system, check the business day is closed, audit the login.",
)
@flow(name="POS: authenticate")
async def authenticate(
    pos_dir: str, business_date: str, credentials_path: str | None = None
) -> dict[str, Any]:
    """Verify the POS credentials (``credentials_path``, default the POS folder's
    ``credentials.json``) and that ``business_date`` is closed; raises on refusal."""
    day = parse_business_date(business_date)
    ctx = current_run_context()
    if ctx is not None:
        ctx.set_parts(1)
    with _login(pos_dir, credentials_path, "authenticate") as pos:
        pos.require_business_date(day)
        stores = pos.stores()
    if ctx is not None:
        ctx.advance(1, info=f"logged in to the POS as {pos.username}: {len(stores)} stores")
    return {
        "username": pos.username,
        "businessDate": day.isoformat(),
        "stores": [s.code for s in stores],
    }


@workflow(
    id=EXTRACT_SALES,
    description="Extract the day's sales per store: sales.csv and sales_summary.json.",
)
@flow(name="POS: extract sales")
async def extract_sales(
    pos_dir: str, business_date: str, output_dir: str, credentials_path: str | None = None
) -> dict[str, Any]:
    """One CSV row per sale, and a JSON summary per store (counts, amounts, top products).
    Fails, leaving no report, if a sale's items do not add up to its amounts."""
    day = parse_business_date(business_date)
    target = _report_dir(output_dir, day)
    summaries: list[dict[str, Any]] = []
    with _login(pos_dir, credentials_path, "extract-sales") as pos:
        pos.require_business_date(day)
        stores = pos.stores()
        with atomic_open(target / SALES_FILE) as fh:
            out = csv.writer(fh)
            out.writerow(
                ["store_code", "store_name", "ticket", "sold_at", "items", "subtotal", "tax",
                 "total"]
            )  # fmt: skip

            def one_store(store: Store) -> str:
                rows = pos.sales(store.id, day)
                for r in rows:
                    if (
                        r["items_cents"] != r["subtotal_cents"]
                        or r["items_quantity"] != r["item_count"]
                        or r["subtotal_cents"] + r["tax_cents"] != r["total_cents"]
                    ):
                        raise PosIntegrityError(f"sale {r['ticket']}: items and amounts differ")
                    out.writerow(
                        [store.code, store.name, r["ticket"], r["sold_at"], r["item_count"],
                         money(r["subtotal_cents"]), money(r["tax_cents"]),
                         money(r["total_cents"])]
                    )  # fmt: skip
                summaries.append(
                    {
                        "storeCode": store.code,
                        "storeName": store.name,
                        "sales": len(rows),
                        "items": sum(r["item_count"] for r in rows),
                        "subtotalCents": sum(r["subtotal_cents"] for r in rows),
                        "taxCents": sum(r["tax_cents"] for r in rows),
                        "totalCents": sum(r["total_cents"] for r in rows),
                        "topProducts": [
                            {"sku": p["sku"], "name": p["name"], "quantity": p["quantity"]}
                            for p in pos.top_products(store.id, day)
                        ],
                    }
                )
                return f"{len(rows)} sales"

            await _each_store(stores, "sales", one_store)
    totals = {
        key: sum(s[key] for s in summaries)
        for key in ("sales", "items", "subtotalCents", "taxCents", "totalCents")
    }
    summary = {"businessDate": day.isoformat(), "currency": "USD", "stores": summaries, **totals}
    with atomic_open(target / SALES_SUMMARY_FILE) as fh:
        json.dump(summary, fh, indent=2)
        fh.write("\n")
    return {"path": str(target / SALES_FILE), **totals}


@workflow(
    id=EXTRACT_PAYMENTS,
    description="Extract the day's payments per store and method, reconciled against sales.",
)
@flow(name="POS: extract payments")
async def extract_payments(
    pos_dir: str, business_date: str, output_dir: str, credentials_path: str | None = None
) -> dict[str, Any]:
    """payments.csv: one row per store and payment method. Every sale's payments must add up to
    its total; otherwise the workflow fails and leaves no report."""
    day = parse_business_date(business_date)
    path = _report_dir(output_dir, day) / PAYMENTS_FILE
    totals = {"rows": 0, "transactions": 0, "amountCents": 0}
    with _login(pos_dir, credentials_path, "extract-payments") as pos:
        pos.require_business_date(day)
        stores = pos.stores()
        with atomic_open(path) as fh:
            out = csv.writer(fh)
            out.writerow(["store_code", "store_name", "method", "transactions", "amount"])

            def one_store(store: Store) -> str:
                off = pos.unreconciled_sales(store.id, day)
                if off:
                    first = off[0]
                    raise PosIntegrityError(
                        f"payments do not reconcile with sales at {store.name}: {len(off)} "
                        f"sale(s), e.g. {first['ticket']} total {money(first['total_cents'])} "
                        f"paid {money(first['paid_cents'])}"
                    )
                rows = pos.payments_by_method(store.id, day)
                for r in rows:
                    out.writerow(
                        [store.code, store.name, r["method"], r["transactions"],
                         money(r["amount_cents"])]
                    )  # fmt: skip
                    totals["rows"] += 1
                    totals["transactions"] += r["transactions"]
                    totals["amountCents"] += r["amount_cents"]
                return f"{sum(r['transactions'] for r in rows)} payments"

            await _each_store(stores, "payments", one_store)
    return {"path": str(path), **totals}


@workflow(
    id=DOWNLOAD_GIFT_CARDS,
    description="Download the day's gift-card transactions (activations, reloads, redemptions).",
)
@flow(name="POS: download gift-card transactions")
async def download_gift_cards(
    pos_dir: str,
    business_date: str,
    output_dir: str,
    mask_card_numbers: bool = True,
    credentials_path: str | None = None,
) -> dict[str, Any]:
    """gift_cards.csv: one row per transaction, card numbers masked unless told otherwise.
    Fails, leaving no report, if a transaction's balances do not follow from its amount."""
    day = parse_business_date(business_date)
    path = _report_dir(output_dir, day) / GIFT_CARDS_FILE
    totals = {"rows": 0, "amountCents": 0}
    with _login(pos_dir, credentials_path, "download-gift-cards") as pos:
        pos.require_business_date(day)
        stores = pos.stores()
        with atomic_open(path) as fh:
            out = csv.writer(fh)
            out.writerow(
                ["transaction_id", "store_code", "occurred_at", "card", "kind", "amount",
                 "balance_before", "balance_after", "ticket"]
            )  # fmt: skip

            def one_store(store: Store) -> str:
                rows = pos.gift_card_transactions(store.id, day)
                for r in rows:
                    before, after = r["balance_before_cents"], r["balance_after_cents"]
                    if before + r["amount_cents"] != after or after < 0:
                        raise PosIntegrityError(f"gift-card transaction {r['id']}: bad balances")
                    card = r["card_number"]
                    if mask_card_numbers:
                        card = card[:4] + "*" * (len(card) - 8) + card[-4:]
                    out.writerow(
                        [r["id"], store.code, r["occurred_at"], card, r["kind"],
                         money(r["amount_cents"]), money(before), money(after), r["ticket"] or ""]
                    )  # fmt: skip
                    totals["rows"] += 1
                    totals["amountCents"] += r["amount_cents"]
                return f"{len(rows)} gift-card transactions"

            await _each_store(stores, "gift cards", one_store)
    return {"path": str(path), **totals}


# --------------------------------------------------------------------------- the demo job


def demo_job_spec(pos_dir: str, output_dir: str, business_date: str) -> dict[str, Any]:
    """The seed's "Daily sales report extraction" job (JobCreate, camelCase) for one POS folder
    and day. The gift-card download runs in its own process, to show process isolation."""
    common = {"pos_dir": pos_dir, "business_date": business_date}
    extract = {**common, "output_dir": output_dir}
    return {
        "name": "Daily sales report extraction",
        "sourceProvider": "pos-demo",
        "trigger": "manual",
        "jobConfigJson": {
            "workflowExecutionOrder": [
                {"workflowId": AUTHENTICATE, "parameters": common},
                {"workflowId": EXTRACT_SALES, "parameters": extract},
                {"workflowId": EXTRACT_PAYMENTS, "parameters": extract},
                {"workflowId": DOWNLOAD_GIFT_CARDS, "parameters": extract, "isolation": "process"},
            ]
        },
    }
