"""``Idempotency-Key``: the first response to a request is kept, and a retry gets it back.

A key belongs to its organization and is remembered for ``idempotency_ttl_seconds``. While the
first request is being handled the key is claimed: a second one with the same key waits for
nothing and is told so (``ConflictError``); a request that reuses a key for different content
is refused (``ValidationError`` on the header). A request that fails gives its key back, since
a failed request wrote nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from jobs_plugin.db import write_session
from jobs_plugin.errors import ConflictError, ValidationError
from jobs_plugin.models import IdempotencyRecord, utcnow

HEADER = "Idempotency-Key"


def begin(
    organization_id: str, key: str, fingerprint: str, ttl_seconds: float
) -> IdempotencyRecord | None:
    """Claim ``key`` for a request; ``None`` when it is the first (go ahead and handle it), the
    stored record when an earlier request with the same content has completed (replay it)."""
    now = utcnow()
    try:
        with write_session() as session:
            record = session.exec(
                select(IdempotencyRecord)
                .where(
                    IdempotencyRecord.organization_id == organization_id,
                    IdempotencyRecord.key == key,
                )
                .with_for_update()
            ).first()
            if record is not None and record.created_at < now - timedelta(seconds=ttl_seconds):
                session.delete(record)
                session.flush()
                record = None
            if record is None:
                session.add(
                    IdempotencyRecord(
                        organization_id=organization_id,
                        key=key,
                        fingerprint=fingerprint,
                        created_at=now,
                    )
                )
                return None
    except IntegrityError as exc:  # another request claimed it between our read and write
        raise ConflictError(f"a request with {HEADER} {key!r} is being handled") from exc
    if record.fingerprint != fingerprint:
        raise ValidationError(HEADER, "was already used for a different request")
    if record.completed_at is None:
        raise ConflictError(f"a request with {HEADER} {key!r} is being handled")
    return record


def complete(
    organization_id: str,
    key: str,
    status_code: int,
    response: dict[str, Any],
    headers: dict[str, str],
) -> None:
    """Keep the response of the request that claimed ``key``."""
    with write_session() as session:
        record = session.get(IdempotencyRecord, (organization_id, key))
        if record is None:
            return
        record.status_code = status_code
        record.response = response
        record.headers = headers
        record.completed_at = utcnow()
        session.add(record)


def release(organization_id: str, key: str) -> None:
    """Give ``key`` back after its request failed (it wrote nothing), so it can be retried."""
    with write_session() as session:
        record = session.get(IdempotencyRecord, (organization_id, key))
        if record is not None and record.completed_at is None:
            session.delete(record)
