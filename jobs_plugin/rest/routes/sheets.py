"""``/sheets``: sheets of a workbook, one sheet (with record counts), its records, its CSV."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import StreamingResponse

from jobs_plugin.data import api as data
from jobs_plugin.rest.deps import OrganizationDep, PageNumber
from jobs_plugin.rest.envelopes import SUCCESS, dump, one, whole

router = APIRouter(prefix="/sheets", tags=["sheets"])
SheetId = Annotated[str, Path(alias="sheetId")]
Filter = Annotated[Literal["valid", "error", "all", "none"], Query()]
FilterField = Annotated[str | None, Query(alias="filterField")]
SearchValue = Annotated[str | None, Query(alias="searchValue")]
SearchField = Annotated[str | None, Query(alias="searchField")]
SortField = Annotated[str | None, Query(alias="sortField")]
SortDirection = Annotated[Literal["asc", "desc"], Query(alias="sortDirection")]


@router.get("")
def list_sheets(
    organization: OrganizationDep, workbook_id: Annotated[str, Query(alias="workbookId")]
) -> dict[str, Any]:
    return whole([dump(s) for s in data.list_sheets(workbook_id, organization=organization)])


@router.get("/{sheetId}")
def get_sheet(sheet_id: SheetId, organization: OrganizationDep) -> dict[str, Any]:
    return one(dump(data.get_sheet(sheet_id, organization=organization)))


@router.get("/{sheetId}/records")
def get_records(
    sheet_id: SheetId,
    organization: OrganizationDep,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=data.MAX_PAGE_SIZE)] = 10_000,
    page_number: PageNumber = 1,
    filter: Filter = "all",
    filter_field: FilterField = None,
    search_value: SearchValue = None,
    search_field: SearchField = None,
    q: str | None = None,
    ids: Annotated[list[str] | None, Query()] = None,
    fields: Annotated[list[str] | None, Query()] = None,
    sort_field: SortField = None,
    sort_direction: SortDirection = "asc",
    include_counts: Annotated[bool, Query(alias="includeCounts")] = False,
) -> dict[str, Any]:
    """``{"data": {"success": true, "records": [...], "counts"?: {...}}}`` as Flatfile
    answers."""
    result = data.get_records(
        sheet_id,
        page_size=page_size,
        page_number=page_number,
        filter=filter,
        filter_field=filter_field,
        search_value=search_value,
        search_field=search_field,
        q=q,
        ids=ids,
        fields=fields,
        sort_field=sort_field,
        sort_direction=sort_direction,
        include_counts=include_counts,
        organization=organization,
    )
    body = dump(result)
    body.pop("total", None)
    if result.counts is None:
        body.pop("counts", None)
    return one({"success": True} | body)


@router.post("/{sheetId}/records")
def insert_records(
    sheet_id: SheetId,
    organization: OrganizationDep,
    records: Annotated[Any, Body()] = None,
) -> dict[str, Any]:
    """Body: ``[{fieldKey: {"value": v}}]``; answers the stored records (ids, validity).
    (The body is checked after the sheet, so another organization's sheet is a 404.)"""
    result = data.insert_records(sheet_id, records, organization=organization)
    return one({"records": [dump(r) for r in result.records]})


@router.put("/{sheetId}/records")
def update_records(
    sheet_id: SheetId,
    organization: OrganizationDep,
    records: Annotated[Any, Body()] = None,
) -> dict[str, Any]:
    """Body: ``[{id, values: {fieldKey: {"value": v}}}]``."""
    result = data.update_records(sheet_id, records, organization=organization)
    return one({"records": [dump(r) for r in result.records]})


@router.delete("/{sheetId}/records")
def delete_records(
    sheet_id: SheetId,
    organization: OrganizationDep,
    ids: Annotated[list[str] | None, Query()] = None,
) -> dict[str, Any]:
    data.delete_records(sheet_id, ids or [], organization=organization)
    return SUCCESS


@router.get("/{sheetId}/download")
def download_sheet(
    sheet_id: SheetId,
    organization: OrganizationDep,
    filter: Filter = "all",
    filter_field: FilterField = None,
    search_value: SearchValue = None,
    search_field: SearchField = None,
    sort_field: SortField = None,
    sort_direction: SortDirection = "asc",
) -> StreamingResponse:
    sheet = data.get_sheet(sheet_id, include_counts=False, organization=organization)
    body = data.iter_sheet_csv(
        sheet_id,
        filter=filter,
        filter_field=filter_field,
        search_value=search_value,
        search_field=search_field,
        sort_field=sort_field,
        sort_direction=sort_direction,
        organization=organization,
    )
    return StreamingResponse(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(sheet.name)}.csv"},
    )
