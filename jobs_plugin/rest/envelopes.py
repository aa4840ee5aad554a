"""Flatfile's response envelopes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from jobs_plugin.models import Page

SUCCESS: dict[str, Any] = {"data": {"success": True}}


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(by_alias=True, mode="json")


def one(data: dict[str, Any]) -> dict[str, Any]:
    return {"data": data}


def page(items: list[dict[str, Any]], page: Page[Any]) -> dict[str, Any]:
    return {
        "data": items,
        "pagination": {
            "currentPage": page.page_number,
            "pageCount": page.page_count,
            "totalCount": page.total,
        },
    }


def whole(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A list that is never paged, in the list envelope (one page holding everything)."""
    return {
        "data": items,
        "pagination": {"currentPage": 1, "pageCount": 1, "totalCount": len(items)},
    }
