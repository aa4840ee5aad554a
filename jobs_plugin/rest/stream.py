"""The live event stream: one poller per server process fans new catalog events out to every
open Server-Sent Events connection.

The catalog is the bus: events written by any process (the API's background runs, runners,
workers) reach every stream in cursor order. A stream resumes from a cursor (``Last-Event-ID``)
by replaying the catalog first, then following the poller, skipping what it already sent. A
client too slow to keep up is disconnected rather than buffered without bound; it reconnects
with ``Last-Event-ID`` and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from jobs_plugin import catalog, db
from jobs_plugin.models import Event, EventPublic
from jobs_plugin.rest.envelopes import dump

logger = logging.getLogger("prefect_jobs.rest.stream")
KEEPALIVE_SECONDS = 15.0
_BATCH = 500
_QUEUE_LIMIT = 10_000


@dataclass(frozen=True)
class EventFilter:
    organization_id: str
    job_id: str | None = None
    run_id: str | None = None
    topics: frozenset[str] | None = None

    def matches(self, event: Event) -> bool:
        return (
            event.organization_id == self.organization_id
            and (self.job_id is None or event.job_id == self.job_id)
            and (self.run_id is None or event.run_id == self.run_id)
            and (self.topics is None or event.topic in self.topics)
        )


@dataclass(eq=False)
class _Subscriber:
    filter: EventFilter
    queue: asyncio.Queue[Event | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_QUEUE_LIMIT)
    )


class EventHub:
    """Polls the catalog every ``poll_seconds`` while anyone listens."""

    def __init__(self, poll_seconds: float) -> None:
        self._poll_seconds = poll_seconds
        self._subscribers: set[_Subscriber] = set()
        self._cursor = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._poke = asyncio.Event()
        self._stop_listening: Callable[[], None] = lambda: None

    @property
    def cursor(self) -> int:
        """The last catalog event the poller has seen."""
        return self._cursor

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def poke(events: Sequence[Any]) -> None:
            loop.call_soon_threadsafe(self._poke.set)

        # Events committed in this process (runs the server executes) wake the poller at once;
        # others' are found by polling.
        self._stop_listening = db.listen_for_events(poke)
        self._task = asyncio.create_task(self._run(), name="prefect-jobs-event-hub")

    async def stop(self) -> None:
        self._stop_listening()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sub in self._subscribers:
            _close(sub)

    async def subscribe(self, event_filter: EventFilter) -> _Subscriber:
        if not self._subscribers:
            # Idle until now: nothing to catch up on, start from the catalog's present.
            self._cursor = await anyio.to_thread.run_sync(catalog.latest_cursor)
        sub = _Subscriber(event_filter)
        self._subscribers.add(sub)
        self._wake.set()
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        self._subscribers.discard(sub)

    async def _run(self) -> None:
        while True:
            if not self._subscribers:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._poke.clear()
            try:
                batch = await anyio.to_thread.run_sync(catalog.events_after, self._cursor, _BATCH)
            except Exception:
                logger.exception("event stream poll failed")
                batch = []
            for event in batch:
                self._cursor = event.cursor or self._cursor
                self._fan_out(event)
            if len(batch) < _BATCH:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._poke.wait(), self._poll_seconds)

    def _fan_out(self, event: Event) -> None:
        for sub in list(self._subscribers):
            if not sub.filter.matches(event):
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                logger.warning("event stream client too slow; disconnecting it")
                self._subscribers.discard(sub)
                _close(sub)


def _close(sub: _Subscriber) -> None:
    """Tell the stream to end, making room for the end mark if the queue is full."""
    while True:
        try:
            sub.queue.put_nowait(None)
            return
        except asyncio.QueueFull:
            sub.queue.get_nowait()


def sse_message(event: Event) -> str:
    data = json.dumps(dump(EventPublic.model_validate(event)), separators=(",", ":"))
    return f"id: {event.cursor}\nevent: {event.topic}\ndata: {data}\n\n"


async def stream(hub: EventHub, event_filter: EventFilter, after: int | None) -> AsyncIterator[str]:
    """The SSE text of a stream: the catalog's events after ``after`` (if given), then live."""
    sub = await hub.subscribe(event_filter)
    try:
        yield "retry: 1000\n\n"
        last = after if after is not None else hub.cursor
        if after is not None:
            while True:
                batch = await anyio.to_thread.run_sync(_backlog, event_filter, last)
                for event in batch:
                    if event_filter.matches(event):
                        yield sse_message(event)
                    last = event.cursor or last
                if len(batch) < _BATCH:
                    break
        while True:
            try:
                live = await asyncio.wait_for(sub.queue.get(), timeout=KEEPALIVE_SECONDS)
            except asyncio.TimeoutError:
                yield ": ping\n\n"
                continue
            if live is None:
                return
            if (live.cursor or 0) <= last:
                continue
            yield sse_message(live)
            last = live.cursor or last
    finally:
        hub.unsubscribe(sub)


def _backlog(event_filter: EventFilter, after: int) -> list[Event]:
    """The next catalog events of the stream's job/run (topics are filtered by the caller, so
    that the cursor moves past events of other topics)."""
    return catalog.list_events(
        event_filter.organization_id,
        job_id=event_filter.job_id,
        run_id=event_filter.run_id,
        after_cursor=after,
        limit=_BATCH,
    )
