"""``/files``: upload (multipart, as Flatfile's client sends it), list, read, download, delete."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Path, Query, UploadFile
from fastapi.responses import StreamingResponse

from jobs_plugin.data import api as data
from jobs_plugin.rest.deps import OrganizationDep, PageNumber, PageSize
from jobs_plugin.rest.envelopes import SUCCESS, dump, one, page

router = APIRouter(prefix="/files", tags=["files"])
FileId = Annotated[str, Path(alias="fileId")]


@router.post("", status_code=201)
def upload_file(
    organization: OrganizationDep,
    file: UploadFile,
    space_id: Annotated[str | None, Form(alias="spaceId")] = None,
    environment_id: Annotated[str | None, Form(alias="environmentId")] = None,
    mode: Annotated[str, Form()] = "import",
) -> dict[str, Any]:
    """Multipart form: the part ``file`` and the fields ``spaceId``, ``environmentId``,
    ``mode``. The bytes are copied to storage in blocks, never held whole."""
    stored = data.upload_file(
        file.file,
        name=file.filename or "upload",
        space_id=space_id,
        environment_id=environment_id,
        mode=mode,
        organization=organization,
    )
    return one(dump(stored))


@router.get("")
def list_files(
    organization: OrganizationDep,
    page_number: PageNumber = 1,
    page_size: PageSize = 50,
    mode: str | None = None,
    space_id: Annotated[str | None, Query(alias="spaceId")] = None,
) -> dict[str, Any]:
    files = data.list_files(
        page_number=page_number, page_size=page_size, mode=mode, organization=organization
    )
    return page([dump(f) for f in files.items], files)


@router.get("/{fileId}")
def get_file(file_id: FileId, organization: OrganizationDep) -> dict[str, Any]:
    return one(dump(data.get_file(file_id, organization=organization)))


@router.get("/{fileId}/download")
def download_file(file_id: FileId, organization: OrganizationDep) -> StreamingResponse:
    meta = data.get_file(file_id, organization=organization)
    return StreamingResponse(
        data.iter_file(file_id, organization=organization),
        media_type=meta.mimetype,
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(meta.name)}",
            "Content-Length": str(meta.size),
        },
    )


@router.delete("/{fileId}")
def delete_file(file_id: FileId, organization: OrganizationDep) -> dict[str, Any]:
    data.delete_file(file_id, organization=organization)
    return SUCCESS
