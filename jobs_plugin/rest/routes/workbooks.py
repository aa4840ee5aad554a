"""``/workbooks``: create (with sheet configs), list, read, update, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from jobs_plugin.data import api as data
from jobs_plugin.data.models import WorkbookCreate, WorkbookUpdate
from jobs_plugin.rest.deps import OrganizationDep, PageNumber, PageSize
from jobs_plugin.rest.envelopes import SUCCESS, dump, one, page

router = APIRouter(prefix="/workbooks", tags=["workbooks"])
WorkbookId = Annotated[str, Path(alias="workbookId")]


@router.post("", status_code=201)
def create_workbook(body: WorkbookCreate, organization: OrganizationDep) -> dict[str, Any]:
    return one(dump(data.create_workbook(body, organization=organization)))


@router.get("")
def list_workbooks(
    organization: OrganizationDep, page_number: PageNumber = 1, page_size: PageSize = 50
) -> dict[str, Any]:
    workbooks = data.list_workbooks(
        page_number=page_number, page_size=page_size, organization=organization
    )
    return page([dump(w) for w in workbooks.items], workbooks)


@router.get("/{workbookId}")
def get_workbook(workbook_id: WorkbookId, organization: OrganizationDep) -> dict[str, Any]:
    return one(dump(data.get_workbook(workbook_id, organization=organization)))


@router.patch("/{workbookId}")
def update_workbook(
    workbook_id: WorkbookId, body: WorkbookUpdate, organization: OrganizationDep
) -> dict[str, Any]:
    return one(dump(data.update_workbook(workbook_id, body, organization=organization)))


@router.delete("/{workbookId}")
def delete_workbook(workbook_id: WorkbookId, organization: OrganizationDep) -> dict[str, Any]:
    data.delete_workbook(workbook_id, organization=organization)
    return SUCCESS
