"""Webhooks and their deliveries: an outbox written with the events it delivers.

``enqueue`` runs inside the transaction that writes an event, so a delivery exists for every
event a webhook asked for, even if no dispatcher is running at that moment. Dispatchers (any
number, in any process) ``claim`` due deliveries under a lease; only the oldest pending
delivery of a job (of a webhook) is ever due, so a receiver sees each job's events, its runs'
included, in order.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy.orm import aliased
from sqlmodel import Session, col, func, select

from jobs_plugin import ids
from jobs_plugin.db import read_session, write_session
from jobs_plugin.errors import DeliveryNotFound, WebhookNotFound
from jobs_plugin.models import (
    DeliveryStatus,
    Event,
    Webhook,
    WebhookCreate,
    WebhookDelivery,
    WebhookUpdate,
    utcnow,
)

SECRET_PREFIX = "whsec_"


def create_webhook(organization_id: str, spec: WebhookCreate) -> tuple[Webhook, str]:
    """A new webhook and its signing secret (generated unless ``spec`` has one)."""
    secret = spec.secret or SECRET_PREFIX + secrets.token_urlsafe(24)
    webhook = Webhook(
        id=ids.new_id(ids.WEBHOOK),
        organization_id=organization_id,
        url=spec.url,
        topics=spec.topics,
        description=spec.description,
        active=spec.active,
        secret=secret,
    )
    with write_session() as session:
        session.add(webhook)
    return webhook, secret


def _webhook(session: Session, webhook_id: str, organization_id: str) -> Webhook:
    webhook = session.exec(
        select(Webhook).where(Webhook.id == webhook_id, Webhook.organization_id == organization_id)
    ).first()
    if webhook is None:
        raise WebhookNotFound(webhook_id)
    return webhook


def get_webhook(webhook_id: str, organization_id: str) -> Webhook:
    with read_session() as session:
        return _webhook(session, webhook_id, organization_id)


def list_webhooks(organization_id: str) -> list[Webhook]:
    with read_session() as session:
        return list(
            session.exec(
                select(Webhook)
                .where(Webhook.organization_id == organization_id)
                .order_by(col(Webhook.created_at))
            ).all()
        )


def update_webhook(webhook_id: str, organization_id: str, changes: WebhookUpdate) -> Webhook:
    with write_session() as session:
        webhook = _webhook(session, webhook_id, organization_id)
        for name, value in changes.model_dump(exclude_unset=True).items():
            setattr(webhook, name, value)
        webhook.updated_at = utcnow()
        session.add(webhook)
    return webhook


def delete_webhook(webhook_id: str, organization_id: str) -> None:
    """Remove a webhook and its deliveries (pending ones are not sent)."""
    with write_session() as session:
        webhook = _webhook(session, webhook_id, organization_id)
        for delivery in session.exec(
            select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
        ):
            session.delete(delivery)
        session.flush()
        session.delete(webhook)


def enqueue(session: Session, event: Event) -> None:
    """Add a pending delivery of ``event`` for every active webhook that wants its topic."""
    hooks = session.exec(
        select(Webhook).where(
            Webhook.organization_id == event.organization_id, col(Webhook.active).is_(True)
        )
    ).all()
    for hook in hooks:
        if hook.topics and event.topic not in hook.topics:
            continue
        assert event.cursor is not None
        session.add(
            WebhookDelivery(
                id=ids.new_id(ids.DELIVERY),
                organization_id=event.organization_id,
                webhook_id=hook.id,
                event_id=event.id,
                event_cursor=event.cursor,
                topic=event.topic,
                ordering_key=event.job_id,
                next_attempt_at=event.created_at,
            )
        )


def claim(
    limit: int, lease_seconds: float, now: datetime | None = None
) -> list[tuple[WebhookDelivery, Webhook, Event]]:
    """Lease up to ``limit`` due deliveries, each the oldest pending one of its job."""
    now = now or utcnow()
    head = WebhookDelivery
    earlier = aliased(WebhookDelivery)
    has_earlier = (
        select(earlier.id)
        .where(
            earlier.status == DeliveryStatus.PENDING,
            earlier.webhook_id == head.webhook_id,
            earlier.ordering_key == head.ordering_key,
            earlier.event_cursor < head.event_cursor,
        )
        .exists()
    )
    query = (
        select(head, Webhook, Event)
        .join(Webhook, col(Webhook.id) == col(head.webhook_id))
        .join(Event, col(Event.id) == col(head.event_id))
        .where(
            head.status == DeliveryStatus.PENDING,
            col(head.next_attempt_at) <= now,
            col(head.lease_until).is_(None) | (col(head.lease_until) < now),
            ~has_earlier,
        )
        .order_by(col(head.event_cursor))
        .limit(limit)
    )
    with write_session() as session:
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(of=head, skip_locked=True)
        rows = list(session.exec(query).all())
        for delivery, _, _ in rows:
            delivery.lease_until = now + timedelta(seconds=lease_seconds)
            session.add(delivery)
    return rows


def record_attempt(
    delivery_id: str,
    *,
    ok: bool,
    status_code: int | None,
    error: str | None,
    max_attempts: int,
    backoff_seconds: float,
    backoff_max_seconds: float,
) -> WebhookDelivery:
    """Note an attempt's result: delivered, retried later (doubling the wait) or given up."""
    now = utcnow()
    with write_session() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:  # its webhook was deleted meanwhile
            raise DeliveryNotFound(delivery_id)
        delivery.attempts += 1
        delivery.last_status_code = status_code
        delivery.last_error = (error or "")[:1000] or None
        delivery.lease_until = None
        delivery.updated_at = now
        if ok:
            delivery.status = DeliveryStatus.SUCCEEDED
            delivery.delivered_at = now
        elif delivery.attempts >= max_attempts:
            delivery.status = DeliveryStatus.FAILED
        else:
            wait = min(backoff_max_seconds, backoff_seconds * 2 ** (delivery.attempts - 1))
            delivery.next_attempt_at = now + timedelta(seconds=wait)
        session.add(delivery)
    return delivery


def list_deliveries(
    webhook_id: str,
    organization_id: str,
    *,
    status: DeliveryStatus | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[WebhookDelivery]:
    with read_session() as session:
        _webhook(session, webhook_id, organization_id)
        query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        return list(
            session.exec(
                query.order_by(col(WebhookDelivery.event_cursor)).offset(offset).limit(limit)
            ).all()
        )


def retry_delivery(delivery_id: str, webhook_id: str, organization_id: str) -> WebhookDelivery:
    """Send a delivery again (a replay): pending now, with a fresh count of attempts."""
    with write_session() as session:
        _webhook(session, webhook_id, organization_id)
        delivery = session.exec(
            select(WebhookDelivery).where(
                WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == webhook_id
            )
        ).first()
        if delivery is None:
            raise DeliveryNotFound(delivery_id)
        now = utcnow()
        delivery.status = DeliveryStatus.PENDING
        delivery.attempts = 0
        delivery.next_attempt_at = now
        delivery.lease_until = None
        delivery.updated_at = now
        session.add(delivery)
    return delivery


def pending_count(organization_id: str | None = None) -> int:
    """How many deliveries still wait (tests and the CLI's status)."""
    query = select(func.count()).where(WebhookDelivery.status == DeliveryStatus.PENDING)
    if organization_id is not None:
        query = query.where(WebhookDelivery.organization_id == organization_id)
    with read_session() as session:
        return int(session.exec(query).one())
