"""The simulated POS system the ``pos.*`` workflows talk to.

A folder holding ``pos.db`` (SQLite: stores, products, users, closed business days, sales with
their items, payments, gift-card transactions, sessions and an audit log) and
``credentials.json`` (the account the reporting workflows use), generated deterministically
from the shipped ``data/pos_catalog.json`` and a fixed seed. It starts with a week of business
days; any other past day is generated from its date when first asked for, as if the POS had
closed it then, so the data of a day never depends on which days were asked for before.

Everything a workflow reads goes through a ``PosSession``, which exists only after a successful
login; logins and refused logins are written to the POS's audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import secrets
import sqlite3
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

DB_NAME = "pos.db"
CREDENTIALS_NAME = "credentials.json"
GO_LIVE = date(2025, 1, 1)  # the first business day the POS can report
SEEDED_FIRST_DATE = date(2026, 11, 16)  # business days generated with the POS
SEEDED_DAYS = 7
SEED = 20261122
SESSION_MINUTES = 30
SCHEMA_VERSION = 1  # PRAGMA user_version of the database; a folder with another is rebuilt
_PBKDF2_ROUNDS = 20_000
_OPEN_SECONDS = 7 * 3600  # 07:00
_CLOSE_SECONDS = 19 * 3600  # 19:00

SCHEMA = """
CREATE TABLE stores (
    id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    city TEXT NOT NULL, tax_bps INTEGER NOT NULL, traffic REAL NOT NULL
);
CREATE TABLE products (sku TEXT PRIMARY KEY, name TEXT NOT NULL, price_cents INTEGER NOT NULL);
CREATE TABLE users (
    username TEXT PRIMARY KEY, salt TEXT NOT NULL, password_hash TEXT NOT NULL,
    active INTEGER NOT NULL
);
CREATE TABLE business_days (business_date TEXT PRIMARY KEY, closed_at TEXT NOT NULL);
CREATE TABLE sales (
    id INTEGER PRIMARY KEY, store_id INTEGER NOT NULL REFERENCES stores(id),
    business_date TEXT NOT NULL, ticket TEXT NOT NULL UNIQUE, sold_at TEXT NOT NULL,
    item_count INTEGER NOT NULL, subtotal_cents INTEGER NOT NULL, tax_cents INTEGER NOT NULL,
    total_cents INTEGER NOT NULL
);
CREATE INDEX sales_by_day ON sales (business_date, store_id);
CREATE TABLE sale_items (
    sale_id INTEGER NOT NULL REFERENCES sales(id), line INTEGER NOT NULL,
    sku TEXT NOT NULL REFERENCES products(sku), quantity INTEGER NOT NULL,
    unit_price_cents INTEGER NOT NULL, amount_cents INTEGER NOT NULL,
    PRIMARY KEY (sale_id, line)
);
CREATE TABLE payments (
    id INTEGER PRIMARY KEY, sale_id INTEGER NOT NULL REFERENCES sales(id),
    method TEXT NOT NULL, amount_cents INTEGER NOT NULL
);
CREATE INDEX payments_by_sale ON payments (sale_id);
CREATE TABLE gift_card_transactions (
    id INTEGER PRIMARY KEY, card_number TEXT NOT NULL,
    store_id INTEGER NOT NULL REFERENCES stores(id), business_date TEXT NOT NULL,
    occurred_at TEXT NOT NULL, kind TEXT NOT NULL, amount_cents INTEGER NOT NULL,
    balance_before_cents INTEGER NOT NULL, balance_after_cents INTEGER NOT NULL,
    sale_id INTEGER REFERENCES sales(id)
);
CREATE INDEX gift_cards_by_day ON gift_card_transactions (business_date, store_id);
CREATE TABLE sessions (
    token TEXT PRIMARY KEY, username TEXT NOT NULL, purpose TEXT NOT NULL,
    created_at TEXT NOT NULL, expires_at TEXT NOT NULL, ended_at TEXT
);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, username TEXT NOT NULL, action TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


class PosError(Exception):
    """A problem reported by the simulated POS system."""


class PosAuthenticationError(PosError):
    """The POS refused the credentials."""


class BusinessDateUnavailable(PosError):
    """The POS has no closed business day for the requested date."""


class PosIntegrityError(PosError):
    """The POS's figures do not reconcile (e.g. payments differ from the sales they settle)."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class Store:
    id: int
    code: str
    name: str
    city: str


def seeded_business_dates() -> list[date]:
    """The business days generated with the POS; any other past day is generated (the same
    way, from its date) the first time it is asked for."""
    return [SEEDED_FIRST_DATE + timedelta(days=i) for i in range(SEEDED_DAYS)]


def parse_business_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"business_date must be an ISO date like 2026-11-22, got {value!r}"
        ) from None


def money(cents: int) -> str:
    """Cents as a decimal string: 1234 -> '12.34', -50 -> '-0.50'."""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _hash_password(password: str, salt: str) -> str:
    raw = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), _PBKDF2_ROUNDS)
    return raw.hex()


# --------------------------------------------------------------------------- creation


def ensure_pos(pos_dir: str | Path) -> Path:
    """The POS database in ``pos_dir``, generated first if missing (or left by an older version
    of this library). Idempotent, and safe when several processes call it at once: each builds
    a private file and the first to publish it wins.
    """
    folder = Path(pos_dir)
    db_path = folder / DB_NAME
    stale = db_path.exists() and _schema_version(db_path) != SCHEMA_VERSION
    if db_path.exists() and not stale:
        return db_path
    folder.mkdir(parents=True, exist_ok=True)
    temporary: list[str] = []
    try:
        fd, tmp_db = tempfile.mkstemp(dir=folder, prefix=f".{DB_NAME}.", suffix=".part")
        os.close(fd)
        temporary.append(tmp_db)
        credentials = _build(Path(tmp_db))
        fd, tmp_creds = tempfile.mkstemp(dir=folder, prefix=f".{CREDENTIALS_NAME}.", suffix=".part")
        temporary.append(tmp_creds)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"username": credentials.username, "password": credentials.password}, fh)
            fh.write("\n")
        # The credentials go first: once the database is there, they must be too.
        _publish(Path(tmp_creds), folder / CREDENTIALS_NAME, replace=stale)
        _publish(Path(tmp_db), db_path, replace=stale)
    finally:
        for leftover in temporary:
            with suppress(FileNotFoundError):
                os.unlink(leftover)
    return db_path


def _schema_version(db_path: Path) -> int:
    try:
        conn = sqlite3.connect(db_path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return -1
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        return version
    except sqlite3.DatabaseError:  # not a database
        return -1
    finally:
        conn.close()


def _publish(tmp: Path, final: Path, *, replace: bool = False) -> None:
    """Move ``tmp`` to ``final`` atomically; unless ``replace``, only if ``final`` is absent
    (a hard link fails on an existing name)."""
    if replace:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links
        if not final.exists():
            os.replace(tmp, final)
    if tmp.exists():
        tmp.unlink()


def _load_catalog() -> dict[str, Any]:
    text = resources.files("flows").joinpath("data/pos_catalog.json").read_text(encoding="utf-8")
    catalog: dict[str, Any] = json.loads(text)
    return catalog


def _build(path: Path) -> Credentials:
    """Write the simulated POS, with its seeded business days, into the SQLite file ``path``."""
    catalog = _load_catalog()
    rng = random.Random(SEED)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.executemany(
            "INSERT INTO stores (id, code, name, city, tax_bps, traffic) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (i, s["code"], s["name"], s["city"], s["tax_bps"], s["traffic"])
                for i, s in enumerate(catalog["stores"], 1)
            ],
        )
        conn.executemany(
            "INSERT INTO products (sku, name, price_cents) VALUES (?, ?, ?)",
            [(p["sku"], p["name"], p["price_cents"]) for p in catalog["products"]],
        )
        alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        credentials = Credentials("reports-bot", "".join(rng.choices(alphabet, k=24)))
        for username, password, active in (
            (credentials.username, credentials.password, 1),
            ("former-manager", "".join(rng.choices(alphabet, k=24)), 0),
        ):
            salt = rng.randbytes(16).hex()
            conn.execute(
                "INSERT INTO users (username, salt, password_hash, active) VALUES (?, ?, ?, ?)",
                (username, salt, _hash_password(password, salt), active),
            )
        for day in seeded_business_dates():
            _DayGenerator(conn, day).run()
        conn.commit()
    finally:
        conn.close()
    return credentials


def _close_day(conn: sqlite3.Connection, day: date) -> None:
    """The POS's end of day for a past ``day`` nobody asked for before (once, even when several
    processes ask at the same time)."""
    conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = conn.execute(
            "SELECT 1 FROM business_days WHERE business_date = ?", (day.isoformat(),)
        ).fetchone()
        if done is None:
            _DayGenerator(conn, day).run()
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


class _DayGenerator:
    """One business day of the chain: sales, payments and gift-card activity in time order.

    A pure function of the date (its own seeded RNG, ids derived from the date), so a day is
    the same whichever days were generated before it. Gift cards of a day come from that day's
    pool of cards sold earlier, with their opening balances.
    """

    def __init__(self, conn: sqlite3.Connection, day: date) -> None:
        self.conn, self.day = conn, day
        self.rng = random.Random(f"{SEED}:{day.isoformat()}")
        self.stores = conn.execute(
            "SELECT id, code, tax_bps, traffic FROM stores ORDER BY id"
        ).fetchall()
        self.products = conn.execute(
            "SELECT sku, price_cents FROM products ORDER BY sku"
        ).fetchall()
        base = int(day.strftime("%Y%m%d")) * 100_000  # ids: yyyymmdd + a 5-digit sequence
        self.next_id = {"sale": base, "payment": base, "gift": base}
        self.balances: dict[str, int] = {
            self._card_number(): self.rng.choice([1500, 2500, 5000, 10000]) for _ in range(15)
        }

    def _id(self, kind: str) -> int:
        self.next_id[kind] += 1
        return self.next_id[kind]

    def _card_number(self) -> str:
        return "6035" + "".join(str(self.rng.randrange(10)) for _ in range(12))

    def run(self) -> None:
        events: list[tuple[int, int, str]] = []  # (second of the day, store index, kind)
        for index, store in enumerate(self.stores):
            count = round(self.rng.randint(80, 120) * store[3])
            events += [(self._second(), index, "sale") for _ in range(count)]
            events += [(self._second(), index, "activate") for _ in range(4)]
            events += [(self._second(), index, "reload") for _ in range(2)]
        events.sort()
        tickets = [0] * len(self.stores)
        midnight = datetime.combine(self.day, datetime.min.time())
        for second, index, kind in events:
            stamp = (midnight + timedelta(seconds=second)).isoformat()
            if kind == "sale":
                tickets[index] += 1
                self._sale(index, tickets[index], stamp)
            else:
                self._card_load(index, kind, stamp)
        closed_at = midnight + timedelta(days=1, hours=2)
        self.conn.execute(
            "INSERT INTO business_days VALUES (?, ?)", (self.day.isoformat(), closed_at.isoformat())
        )

    def _second(self) -> int:
        return self.rng.randrange(_OPEN_SECONDS, _CLOSE_SECONDS)

    def _sale(self, index: int, number: int, stamp: str) -> None:
        rng, store = self.rng, self.stores[index]
        sale_id = self._id("sale")
        lines = []
        for line in range(1, rng.choices([1, 2, 3, 4], weights=[40, 35, 17, 8])[0] + 1):
            sku, price = rng.choice(self.products)
            quantity = rng.choices([1, 2, 3], weights=[80, 16, 4])[0]
            lines.append((sale_id, line, sku, quantity, price, quantity * price))
        subtotal = sum(row[5] for row in lines)
        tax = (subtotal * store[2] + 5000) // 10000
        total = subtotal + tax
        ticket = f"{store[1]}-{self.day:%Y%m%d}-{number:04d}"
        self.conn.execute(
            "INSERT INTO sales VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (sale_id, store[0], self.day.isoformat(), ticket, stamp, sum(r[3] for r in lines),
             subtotal, tax, total),
        )  # fmt: skip
        self.conn.executemany("INSERT INTO sale_items VALUES (?, ?, ?, ?, ?, ?)", lines)

        payments: list[tuple[str, int]] = []
        funded = sorted(card for card, balance in self.balances.items() if balance > 0)
        roll = rng.random()
        if roll < 0.08 and funded:
            card = rng.choice(funded)
            redeemed = min(self.balances[card], total)
            self._card_move(card, index, "redeem", -redeemed, stamp, sale_id)
            payments.append(("gift_card", redeemed))
            if total > redeemed:
                payments.append(("card", total - redeemed))
        elif roll < 0.13 and total > 500:
            cash = rng.randrange(1, total // 100) * 100
            payments += [("cash", cash), ("card", total - cash)]
        else:
            method = rng.choices(["cash", "card", "mobile"], weights=[25, 55, 20])[0]
            payments.append((method, total))
        self.conn.executemany(
            "INSERT INTO payments (id, sale_id, method, amount_cents) VALUES (?, ?, ?, ?)",
            [(self._id("payment"), sale_id, method, amount) for method, amount in payments],
        )

    def _card_load(self, index: int, kind: str, stamp: str) -> None:
        amount = self.rng.choice([2500, 5000, 5000, 10000])
        card = self.rng.choice(sorted(self.balances)) if kind == "reload" else self._card_number()
        self._card_move(card, index, kind, amount, stamp, None)

    def _card_move(
        self, card: str, index: int, kind: str, amount: int, stamp: str, sale_id: int | None
    ) -> None:
        before = self.balances.get(card, 0)
        self.balances[card] = before + amount
        self.conn.execute(
            "INSERT INTO gift_card_transactions (id, card_number, store_id, business_date, "
            "occurred_at, kind, amount_cents, balance_before_cents, balance_after_cents, sale_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self._id("gift"), card, self.stores[index][0], self.day.isoformat(), stamp, kind,
             amount, before, before + amount, sale_id),
        )  # fmt: skip


# --------------------------------------------------------------------------- access


def read_credentials(
    pos_dir: str | Path, credentials_path: str | Path | None = None
) -> Credentials:
    """The account in ``credentials_path`` (default: the POS folder's ``credentials.json``)."""
    path = Path(credentials_path) if credentials_path else Path(pos_dir) / CREDENTIALS_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Credentials(username=str(data["username"]), password=str(data["password"]))
    except FileNotFoundError:
        raise PosAuthenticationError(f"no POS credentials file at {path}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise PosAuthenticationError(
            f"POS credentials file {path} is not a JSON object with username and password"
        ) from exc


def connect(pos_dir: str | Path) -> sqlite3.Connection:
    """A raw connection to an existing POS database (for the POS side and for tests)."""
    path = Path(pos_dir) / DB_NAME
    if not path.exists():
        raise PosError(f"no POS database at {path}")
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


class PosSession:
    """An authenticated session with the POS. Use ``PosSession.login(...)`` as a context
    manager; leaving it logs out."""

    def __init__(self, conn: sqlite3.Connection, username: str, token: str) -> None:
        self._conn = conn
        self.username = username
        self.token = token

    @classmethod
    def login(cls, pos_dir: str | Path, credentials: Credentials, *, purpose: str) -> PosSession:
        """Check ``credentials`` against the POS's users; every attempt is audited."""
        conn = connect(pos_dir)
        try:
            user = conn.execute(
                "SELECT salt, password_hash, active FROM users WHERE username = ?",
                (credentials.username,),
            ).fetchone()
            password_ok = user is not None and hmac.compare_digest(
                _hash_password(credentials.password, user["salt"]), user["password_hash"]
            )
            ok = password_ok and bool(user["active"])
            detail = json.dumps({"purpose": purpose})
            if not ok:
                with conn:
                    conn.execute(
                        "INSERT INTO audit_log (at, username, action, detail) VALUES (?, ?, ?, ?)",
                        (_now(), credentials.username, "login_failed", detail),
                    )
                # Only someone who knows the password learns that the account is disabled.
                reason = "account disabled" if password_ok else "invalid username or password"
                raise PosAuthenticationError(
                    f"POS at {pos_dir} refused login for {credentials.username!r}: {reason}"
                )
            token = secrets.token_hex(16)
            now = datetime.now(timezone.utc)
            with conn:
                conn.execute(
                    "INSERT INTO sessions (token, username, purpose, created_at, expires_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (token, credentials.username, purpose, now.isoformat(timespec="seconds"),
                     (now + timedelta(minutes=SESSION_MINUTES)).isoformat(timespec="seconds")),
                )  # fmt: skip
                conn.execute(
                    "INSERT INTO audit_log (at, username, action, detail) VALUES (?, ?, ?, ?)",
                    (_now(), credentials.username, "login", detail),
                )
        except BaseException:
            conn.close()
            raise
        return cls(conn, credentials.username, token)

    def __enter__(self) -> PosSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.logout()

    def logout(self) -> None:
        try:
            with self._conn:
                self._conn.execute(
                    "UPDATE sessions SET ended_at = ? WHERE token = ? AND ended_at IS NULL",
                    (_now(), self.token),
                )
        finally:
            self._conn.close()

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        live = self._conn.execute(
            "SELECT 1 FROM sessions WHERE token = ? AND ended_at IS NULL AND expires_at > ?",
            (self.token, _now()),
        ).fetchone()
        if live is None:
            raise PosAuthenticationError("POS session expired or ended; log in again")
        return self._conn.execute(sql, params).fetchall()

    def require_business_date(self, day: date) -> None:
        """Raise unless ``day`` is a closed business day: a past day since the POS went live
        (closed on first request if need be), not today or later."""
        found = self._query(
            "SELECT 1 FROM business_days WHERE business_date = ?", (day.isoformat(),)
        )
        if found:
            return
        today = date.today()
        if GO_LIVE <= day < today:
            _close_day(self._conn, day)
            return
        reason = (
            f"it is not closed yet (today is {today.isoformat()})"
            if day >= today
            else f"the POS went live on {GO_LIVE.isoformat()}"
        )
        raise BusinessDateUnavailable(
            f"the POS has no closed business day {day.isoformat()}: {reason}"
        )

    def stores(self) -> list[Store]:
        rows = self._query("SELECT id, code, name, city FROM stores ORDER BY id")
        return [Store(r["id"], r["code"], r["name"], r["city"]) for r in rows]

    def sales(self, store_id: int, day: date) -> list[sqlite3.Row]:
        """The store's sales of the day with the sum of their items, in ticket order."""
        return self._query(
            "SELECT s.ticket, s.sold_at, s.item_count, s.subtotal_cents, s.tax_cents, "
            "s.total_cents, COALESCE(SUM(i.amount_cents), 0) AS items_cents, "
            "COALESCE(SUM(i.quantity), 0) AS items_quantity "
            "FROM sales s LEFT JOIN sale_items i ON i.sale_id = s.id "
            "WHERE s.store_id = ? AND s.business_date = ? GROUP BY s.id ORDER BY s.ticket",
            (store_id, day.isoformat()),
        )

    def top_products(self, store_id: int, day: date, limit: int = 3) -> list[sqlite3.Row]:
        return self._query(
            "SELECT p.sku, p.name, SUM(i.quantity) AS quantity, SUM(i.amount_cents) AS amount "
            "FROM sale_items i JOIN sales s ON s.id = i.sale_id JOIN products p ON p.sku = i.sku "
            "WHERE s.store_id = ? AND s.business_date = ? "
            "GROUP BY p.sku ORDER BY quantity DESC, p.sku LIMIT ?",
            (store_id, day.isoformat(), limit),
        )

    def payments_by_method(self, store_id: int, day: date) -> list[sqlite3.Row]:
        return self._query(
            "SELECT p.method, COUNT(*) AS transactions, SUM(p.amount_cents) AS amount_cents "
            "FROM payments p JOIN sales s ON s.id = p.sale_id "
            "WHERE s.store_id = ? AND s.business_date = ? GROUP BY p.method ORDER BY p.method",
            (store_id, day.isoformat()),
        )

    def unreconciled_sales(self, store_id: int, day: date) -> list[sqlite3.Row]:
        """Sales of the day whose payments do not add up to their total."""
        return self._query(
            "SELECT s.ticket, s.total_cents, COALESCE(SUM(p.amount_cents), 0) AS paid_cents "
            "FROM sales s LEFT JOIN payments p ON p.sale_id = s.id "
            "WHERE s.store_id = ? AND s.business_date = ? GROUP BY s.id "
            "HAVING paid_cents != s.total_cents ORDER BY s.ticket",
            (store_id, day.isoformat()),
        )

    def gift_card_transactions(self, store_id: int, day: date) -> list[sqlite3.Row]:
        return self._query(
            "SELECT g.id, g.occurred_at, g.card_number, g.kind, g.amount_cents, "
            "g.balance_before_cents, g.balance_after_cents, s.ticket "
            "FROM gift_card_transactions g LEFT JOIN sales s ON s.id = g.sale_id "
            "WHERE g.store_id = ? AND g.business_date = ? ORDER BY g.occurred_at, g.id",
            (store_id, day.isoformat()),
        )
