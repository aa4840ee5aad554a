"""``/webhooks``: deliver events to your URL, signed, retried, in order per run, replayable.

See ``jobs_plugin.webhooks`` for the signature (``X-Prefect-Jobs-Signature``) and the retry
schedule. The secret is returned once, by the create call.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

import jobs_plugin as jp
from jobs_plugin.models import DeliveryStatus, WebhookCreate, WebhookUpdate
from jobs_plugin.rest.deps import OrganizationDep, PageNumber, PageSize
from jobs_plugin.rest.envelopes import SUCCESS, dump, one, whole

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
WebhookId = Annotated[str, Path(alias="webhookId")]
DeliveryId = Annotated[str, Path(alias="deliveryId")]


@router.post("", status_code=201)
def create_webhook(body: WebhookCreate, organization: OrganizationDep) -> dict[str, Any]:
    webhook, secret = jp.create_webhook(body, organization=organization)
    return one(dump(webhook) | {"secret": secret})


@router.get("")
def list_webhooks(organization: OrganizationDep) -> dict[str, Any]:
    return whole([dump(w) for w in jp.list_webhooks(organization=organization)])


@router.get("/{webhookId}")
def get_webhook(webhook_id: WebhookId, organization: OrganizationDep) -> dict[str, Any]:
    return one(dump(jp.get_webhook(webhook_id, organization=organization)))


@router.patch("/{webhookId}")
def update_webhook(
    webhook_id: WebhookId, body: WebhookUpdate, organization: OrganizationDep
) -> dict[str, Any]:
    return one(dump(jp.update_webhook(webhook_id, body, organization=organization)))


@router.delete("/{webhookId}")
def delete_webhook(webhook_id: WebhookId, organization: OrganizationDep) -> dict[str, Any]:
    jp.delete_webhook(webhook_id, organization=organization)
    return SUCCESS


@router.get("/{webhookId}/deliveries")
def list_deliveries(
    webhook_id: WebhookId,
    organization: OrganizationDep,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    page_number: PageNumber = 1,
    page_size: PageSize = 100,
) -> dict[str, Any]:
    deliveries = jp.list_deliveries(
        webhook_id,
        status=status,
        limit=page_size,
        offset=(page_number - 1) * page_size,
        organization=organization,
    )
    return {"data": [dump(d) for d in deliveries]}


@router.post("/{webhookId}/deliveries/{deliveryId}/retry")
def retry_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, organization: OrganizationDep
) -> dict[str, Any]:
    return one(dump(jp.retry_delivery(webhook_id, delivery_id, organization=organization)))
