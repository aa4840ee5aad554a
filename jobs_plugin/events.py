"""Event subscriptions: a background thread that follows the catalog's event cursor.

Polling the catalog (every ``event_poll_seconds``) rather than an in-process bus means a
subscriber sees events written by any process, in catalog order, exactly once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs_plugin import catalog
from jobs_plugin.models import EventPublic
from jobs_plugin.settings import get_settings

logger = logging.getLogger("prefect_jobs.events")


@dataclass
class Subscription:
    callback: Callable[[EventPublic], Any]
    organization_id: str
    job_id: str | None
    run_id: str | None
    topics: frozenset[str] | None
    cursor: int
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        callback: Callable[[EventPublic], Any],
        *,
        organization_id: str,
        job_id: str | None = None,
        run_id: str | None = None,
        topics: list[str] | None = None,
        after: int | None = None,
    ) -> Subscription:
        sub = cls(
            callback=callback,
            organization_id=organization_id,
            job_id=job_id,
            run_id=run_id,
            topics=frozenset(topics) if topics else None,
            cursor=after or 0,
        )
        sub._thread = threading.Thread(target=sub._loop, name="prefect-jobs-events", daemon=True)
        sub._thread.start()
        return sub

    def poll(self) -> int:
        """Deliver the events that arrived since the last poll; returns how many."""
        delivered = 0
        while True:
            batch = catalog.list_events(
                self.organization_id,
                job_id=self.job_id,
                run_id=self.run_id,
                after_cursor=self.cursor,
                limit=500,
            )
            for event in batch:
                self.cursor = event.cursor or self.cursor
                if self.topics is None or event.topic in self.topics:
                    self.callback(EventPublic.model_validate(event))
                    delivered += 1
            if len(batch) < 500:
                return delivered

    def _loop(self) -> None:
        interval = get_settings().event_poll_seconds
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:
                logger.exception("event subscription callback failed")
            self._stop.wait(interval)

    def close(self, drain: bool = True) -> None:
        """Stop the subscription; with ``drain``, deliver what arrived before stopping."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if drain:
            self.poll()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
