"""Webhook dispatch: sends pending deliveries, signed, retried with exponential back-off.

Every delivery is a ``POST`` of the event (as ``GET /v1/events/{id}`` gives it) with headers:

* ``X-Prefect-Jobs-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`` keyed
  with the webhook's secret (verify with ``verify_signature``);
* ``X-Prefect-Jobs-Event``, ``X-Prefect-Jobs-Topic``, ``X-Prefect-Jobs-Delivery``.

A 2xx answer delivers it; anything else (or no answer within ``webhook_timeout_seconds``) is
retried after ``webhook_backoff_seconds``, doubling up to ``webhook_backoff_max_seconds``,
until ``webhook_max_attempts``. Deliveries of one job (its runs included) go one at a time, in
event order. Any number of dispatchers may run (leases keep them from sending a delivery twice
at once).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from jobs_plugin import catalog
from jobs_plugin.errors import DeliveryNotFound
from jobs_plugin.models import Event, EventPublic, Webhook, WebhookDelivery
from jobs_plugin.settings import Settings, get_settings

logger = logging.getLogger("prefect_jobs.webhooks")
SIGNATURE_HEADER = "X-Prefect-Jobs-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, *, tolerance_seconds: float = 300
) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` and is no older than the tolerance."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), f"t={timestamp},v1={parts.get('v1')}")


def event_body(event: Event) -> bytes:
    data = EventPublic.model_validate(event).model_dump(by_alias=True, mode="json")
    return json.dumps(data, separators=(",", ":")).encode()


class Dispatcher:
    """Claims due deliveries and sends them, on a background thread or one round at a time."""

    def __init__(
        self, settings: Settings | None = None, *, poll_seconds: float = 0.2, batch: int = 32
    ) -> None:
        self.settings = settings or get_settings()
        self.poll_seconds = poll_seconds
        self.batch = batch
        self._http = httpx.Client(timeout=self.settings.webhook_timeout_seconds)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="prefect-jobs-webhook")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Send what is due now (each job's oldest pending delivery); returns how many."""
        lease = self.settings.webhook_timeout_seconds + 30
        claimed = catalog.claim(self.batch, lease)
        list(self._pool.map(lambda row: self._send(*row), claimed))
        return len(claimed)

    def _send(self, delivery: WebhookDelivery, webhook: Webhook, event: Event) -> None:
        body = event_body(event)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "prefect-jobs-webhooks/1",
            SIGNATURE_HEADER: sign(webhook.secret, int(time.time()), body),
            "X-Prefect-Jobs-Event": event.id,
            "X-Prefect-Jobs-Topic": event.topic,
            "X-Prefect-Jobs-Delivery": delivery.id,
        }
        status: int | None = None
        error: str | None = None
        try:
            response = self._http.post(webhook.url, content=body, headers=headers)
            status = response.status_code
            if not response.is_success:
                error = f"HTTP {status}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        s = self.settings
        # A webhook deleted while we were sending has no delivery left to record.
        with contextlib.suppress(DeliveryNotFound):
            catalog.record_attempt(
                delivery.id,
                ok=error is None,
                status_code=status,
                error=error,
                max_attempts=s.webhook_max_attempts,
                backoff_seconds=s.webhook_backoff_seconds,
                backoff_max_seconds=s.webhook_backoff_max_seconds,
            )

    def start(self) -> Dispatcher:
        self._thread = threading.Thread(
            target=self._loop, name="prefect-jobs-webhooks", daemon=True
        )
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once() > 0
            except Exception:
                logger.exception("webhook dispatch round failed")
                busy = False
            if not busy:
                self._stop.wait(self.poll_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.webhook_timeout_seconds + 5)
        self._pool.shutdown(wait=True)
        self._http.close()
