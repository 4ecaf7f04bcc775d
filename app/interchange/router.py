"""The import and export routes: `GET /contacts/export` (vCard 4.0/3.0 or Google CSV, streamed), `POST
/contacts/import` (a multipart `file` or the raw body) answering the import's report, `GET /contacts/duplicates`
and `POST /contacts/merge`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile

from app.contacts.entries import GroupLabel
from app.contacts.router import ContactsUser
from app.contacts.schemas import SearchQuery
from app.core.config import Settings
from app.core.db import SessionDep
from app.core.errors import UnsupportedMediaType
from app.core.openapi import errors
from app.interchange import duplicates, exporting, importing, jobs
from app.interchange.schemas import (
    DuplicateList,
    ExportFormat,
    ExportVersion,
    ImportJobRead,
    ImportMode,
    ImportReport,
    MergeRequest,
    MergeResult,
)

router = APIRouter(prefix="/contacts", tags=["import and export"])

IMPORT_PATH = "/contacts/import"
_TEXT = {"schema": {"type": "string"}}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_IMPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The file: a multipart form with the file in `file`, or the file itself as the body.",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}},
                "encoding": {"file": {"contentType": "text/vcard, text/csv, application/octet-stream"}},
            },
            "text/vcard": _TEXT,
            "text/x-vcard": _TEXT,
            "text/csv": _TEXT,
            "application/octet-stream": _BINARY,
        },
    }
}
_EXPORT_CONTENT = {"text/vcard": _TEXT, "text/csv": _TEXT}


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": _EXPORT_CONTENT, "description": "The contacts"}, **errors(401, 403, 429)},
)
async def export_contacts(
    user: ContactsUser,
    request: Request,
    format: Annotated[ExportFormat, Query(description="`vcard` (one file of cards) or `csv` (Google's layout)")],
    version: Annotated[ExportVersion, Query(description="The vCard version (`3.0` for older clients)")] = "4.0",
    label: Annotated[GroupLabel | None, Query(description="Only the contacts carrying this label")] = None,
    q: Annotated[SearchQuery | None, Query(description="Only the contacts this search finds (as in the list)")] = None,
) -> StreamingResponse:
    """Your contacts (trash excluded) as one vCard file (4.0, or `version=3.0`) or one CSV file in the layout
    Google Contacts exports and imports, with `label` or `q` only those. Streamed: the first bytes leave at once
    and the book is read in batches. CSV cells starting with `= + - @`, tab or CR are written after an apostrophe,
    so that a spreadsheet shows them instead of running them; this service's import removes it again."""
    stream = exporting.export_stream(
        request.app.state.db.sessionmaker, user.id, format, version=version, label=label, q=q or None
    )
    headers = {"Content-Disposition": f'attachment; filename="{exporting.file_name(format)}"'}
    return StreamingResponse(stream, media_type=exporting.MEDIA_TYPES[format], headers=headers)


class _Upload:
    """The file of an import request: its type, name and size (when known), and its bytes as they come."""

    def __init__(self, chunks: AsyncIterator[bytes], content_type: str | None, filename: str | None, size: int | None):
        self.chunks, self.content_type, self.filename, self.size = chunks, content_type, filename, size


async def _upload(request: Request) -> _Upload:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=5)  # the file is spooled to disk past 1 MB
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise UnsupportedMediaType("Send the file in the form field `file`.")

        async def parts() -> AsyncIterator[bytes]:
            while piece := await upload.read(256 * 1024):
                yield piece

        return _Upload(parts(), upload.content_type, upload.filename, upload.size)
    declared = request.headers.get("content-length", "")
    return _Upload(request.stream(), content_type, None, int(declared) if declared.isdigit() else None)


async def _head(upload: _Upload, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of the file, and whether more follow (then the rest is still in `upload.chunks`)."""
    held = bytearray()
    async for chunk in upload.chunks:
        held += chunk
        if len(held) > limit:
            return bytes(held), True
    return bytes(held), False


@router.post(
    "/import",
    response_model=ImportReport,
    openapi_extra=_IMPORT_BODY,
    responses={
        202: {"model": ImportJobRead, "description": "Over IMPORT_SYNC_MAX_BYTES: a background job (see Location)"},
        **errors(400, 401, 403, 413, 415, 429),
    },
)
async def import_contacts(
    user: ContactsUser,
    session: SessionDep,
    request: Request,
    mode: Annotated[
        ImportMode, Query(description="What a record matching a contact does: merge into it, replace it, or skip")
    ] = "merge",
    mapping: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="For a CSV in another layout: a JSON object of column name to contact field, e.g. "
            '`{"Surname": "last_name", "Mail": "email"}`; fields: ' + ", ".join(importing.csv_in.MAPPABLE),
        ),
    ] = None,
) -> ImportReport | JSONResponse:
    """Import a vCard file (2.1, 3.0 or 4.0; several cards; folded lines, quoted-printable, CHARSET, PHOTO,
    Apple's custom labels, CATEGORIES as labels, unknown and X- properties kept) or a CSV file (Google's or
    Outlook's layout, told by the header; any other with `mapping`), in UTF-8 (with or without BOM), UTF-16 or
    Latin-1. Each record is matched to a contact by UID, else by the same name and a shared email or phone, so an
    import can be repeated: a record already held changes nothing. The report counts what was created, updated,
    unchanged and skipped, and gives each refused record's position and reason; a bad record never stops the
    others. A file that is neither vCard nor CSV answers 415. A file over IMPORT_SYNC_MAX_BYTES (up to IMPORT_MAX_BYTES,
    else 413) is imported in the background: 202 with the job, its URL in `Location` (`GET /imports/{id}`)."""
    settings: Settings = request.app.state.settings
    columns = importing.parse_mapping(mapping)
    upload = await _upload(request)
    if upload.size is not None and upload.size > settings.import_max_bytes:
        raise importing.too_large(upload.size, settings.import_max_bytes)
    head, more = await _head(upload, settings.import_sync_max_bytes)
    if more:

        async def whole() -> AsyncIterator[bytes]:
            yield head
            async for chunk in upload.chunks:
                yield chunk

        job = await jobs.create_job(
            session,
            user.id,
            whole(),
            mode=mode,
            mapping=columns,
            content_type=upload.content_type,
            filename=upload.filename,
            limit=settings.import_max_bytes,
        )
        location = str(request.app.url_path_for("read_import_job", job_id=job["id"]))
        return JSONResponse(
            ImportJobRead.model_validate(job).model_dump(mode="json"), status_code=202, headers={"Location": location}
        )
    return await importing.import_bytes(
        session,
        user.id,
        head,
        mode=mode,
        mapping=columns,
        content_type=upload.content_type,
        filename=upload.filename,
        max_record=settings.import_max_record_bytes,
        fallback_region=settings.default_phone_region,
    )


@router.get("/duplicates", response_model=DuplicateList, responses=errors(401, 403, 429))
async def list_duplicates(
    user: ContactsUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500, description="How many groups to list, surest first")] = 100,
) -> DuplicateList:
    """Groups of your contacts (trash excluded) that are likely the same person: sharing an email (ignoring
    case), a phone (its E.164 form) or a full name (ignoring case, accents and punctuation), each group with the
    keys it shares and a score. Found by hashing each contact's keys once, not by comparing pairs."""
    return await duplicates.find_duplicates(session, user.id, limit)


@router.post("/merge", response_model=MergeResult, responses=errors(401, 403, 404, 429))
async def merge_contacts(body: MergeRequest, user: ContactsUser, session: SessionDep, request: Request) -> MergeResult:
    """Merge contacts into `primary`: it keeps its own values and takes the others' where it has none; every
    email, phone, address, url and label of them all is kept once; notes are joined. The others move to the trash
    (`trashed`): restoring them undoes the merge. 404 if an id is not one of your contacts (nothing changes)."""
    settings: Settings = request.app.state.settings
    return await duplicates.merge_contacts(
        session, user.id, body.ids, body.primary, fallback_region=settings.default_phone_region
    )
