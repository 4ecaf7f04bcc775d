"""The contact routes: your address book over HTTP, with ETags (304 on If-None-Match, 412 on a stale If-Match),
sorted and cursor-paged lists, and labels."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response, status

from app.auth.principal import BearerToken, resolve_principal
from app.auth.schemas import AuthUser
from app.contacts import idempotency, labels, service
from app.contacts.cursor import MAX_CURSOR_LENGTH
from app.contacts.entries import GroupLabel
from app.contacts.idempotency import IdempotencyKeyHeader
from app.contacts.queries import Sort
from app.contacts.schemas import (
    ContactCreate,
    ContactPage,
    ContactRead,
    ContactReplace,
    ContactUpdate,
    LabelCount,
    LabelList,
    LabelRename,
    SearchQuery,
)
from app.core.cache import cache
from app.core.config import Settings
from app.core.db import SessionDep, read_session
from app.core.openapi import errors
from app.core.rate_limit import enforce
from app.core.schemas import MAX_ID, MAX_PAGE_SIZE, MAX_SKIP, Page


def _contact_key_of_path(request: Request) -> Callable[[int], str | None]:
    """On `/contacts/{contact_id}`, the contact's cache key (read in the principal's round trip)."""
    raw = request.path_params.get("contact_id")
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 19 and 0 < int(raw) <= MAX_ID:
        contact_id = int(raw)
        return lambda user_id: cache.contact_key(contact_id, user_id)
    return lambda _: None


async def contacts_user(request: Request, token: BearerToken) -> AuthUser:
    """The caller, within their per-user budget: one for reads, one for writes. On a single contact's route the
    contact's cached bytes come back with the caller's in one round trip (kept in `request.state`). A route
    dependency rather than a router-wide one, and with settings from the app: every dependency FastAPI solves
    costs each request."""
    user, request.state.prefetched_contact = await resolve_principal(request, token, _contact_key_of_path(request))
    settings: Settings = request.app.state.settings
    if request.method in ("GET", "HEAD"):
        await enforce(request, settings.rate_limit_contacts_read, "contacts-read", str(user.id))
    else:
        await enforce(request, settings.rate_limit_contacts_write, "contacts-write", str(user.id))
    return user


ContactsUser = Annotated[AuthUser, Depends(contacts_user)]
router = APIRouter(prefix="/contacts", tags=["contacts"])
labels_router = APIRouter(prefix="/labels", tags=["labels"])

ContactId = Annotated[int, Path(ge=1, le=MAX_ID, description="The contact's id")]
Skip = Annotated[int, Query(ge=0, le=MAX_SKIP)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


IfNoneMatch = Annotated[
    str | None,
    Header(max_length=2048, description="An ETag you hold: 304 Not Modified (no body) while it is current"),
]
IfMatch = Annotated[
    str | None,
    Header(
        max_length=2048,
        description="The ETag of the version you read: the write happens only if it is still current, else 412 "
        "with the current ETag (and nothing changes). Without it the last write wins.",
    ),
]
LabelName = Annotated[GroupLabel, Path(description="A label, as `GET /labels` lists it")]

_NOT_MODIFIED: dict[int | str, dict[str, object]] = {
    304: {"description": "Not modified: the `If-None-Match` ETag is current (no body)"}
}
_PRECONDITION = {**errors(412)}


def _json(raw: bytes, status_code: int = 200, etag: str | None = None) -> Response:
    # Cached JSON goes out as it is stored: no parse and re-encode on the hot path.
    headers = {"ETag": etag} if etag else None
    return Response(content=raw, status_code=status_code, media_type="application/json", headers=headers)


def _list_response(raw: bytes, if_none_match: str | None) -> Response:
    """A list with a strong ETag of its bytes; 304 when the client holds them already."""
    etag = f'"{hashlib.blake2b(raw, digest_size=16).hexdigest()}"'
    if service.etag_matches(if_none_match, etag, weak=True):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    return _json(raw, etag=etag)


def _written(response: Response, contact: dict[str, object]) -> dict[str, object]:
    response.headers["ETag"] = str(contact["etag"])
    return contact


def _region(request: Request) -> str | None:
    settings: Settings = request.app.state.settings
    return settings.default_phone_region


@router.get("", response_model=ContactPage, responses={**errors(400, 401, 403, 429), **_NOT_MODIFIED})
async def list_contacts(
    user: ContactsUser,
    session: SessionDep,
    request: Request,
    skip: Skip = 0,
    limit: Limit = 20,
    q: Annotated[
        SearchQuery | None,
        Query(description="Case-insensitive search in names, nickname, organization, every email and phone digits"),
    ] = None,
    sort: Annotated[
        Sort, Query(description="`created` (default), `name`/`-name` (last, first), `updated`/`-updated`")
    ] = "created",
    label: Annotated[GroupLabel | None, Query(description="Only contacts carrying this label")] = None,
    favorite: Annotated[bool | None, Query(description="Only favorites (true) or only the others (false)")] = None,
    cursor: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_LENGTH,
            description="The `next_cursor` of the previous page (same query, no skip; empty: the first page)",
        ),
    ] = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """A page of your contacts, in creation order unless `sort` says otherwise; with `q`, those whose names,
    nickname, organization or emails contain it, or whose phone digits do (`q=5550199` finds `+1 555-0199`); with
    `label` and `favorite`, only those. Every page has `next_cursor` (null on the last): pass it as `cursor` to
    read the next page in the same order, at the same cost however deep (`skip` reads past rows). The response's
    ETag answers 304 to `If-None-Match`."""
    raw = await service.get_contacts_json(
        session,
        user.id,
        skip,
        limit,
        q,
        sort=sort,
        label=label,
        favorite=favorite,
        cursor=cursor or None,
        secret=request.app.state.settings.jwt_key,
    )
    return _list_response(raw, if_none_match)


@router.get("/birthdays", response_model=Page[ContactRead], responses={**errors(401, 403, 429), **_NOT_MODIFIED})
async def upcoming_birthdays(
    user: ContactsUser,
    session: SessionDep,
    days: Annotated[int, Query(ge=0, le=365, description="How many days ahead, today included")] = 7,
    skip: Skip = 0,
    limit: Limit = 20,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Your contacts whose next birthday falls within the next `days` days, soonest first. Feb 29 birthdays
    fall on Feb 28 in common years."""
    return _list_response(await service.get_birthdays_json(session, user.id, days, skip, limit), if_none_match)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ContactRead, responses=errors(401, 403, 429, 409))
async def create_contact(
    body: ContactCreate,
    user: ContactsUser,
    session: SessionDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> dict[str, object] | Response:
    """Add a contact to your address book. No email of it may belong to another of your contacts (ignoring case;
    the trash does not count): 409. `email`/`phone` set the primary entry of `emails`/`phones`; phone numbers get
    their E.164 form (`e164`) when valid, national ones read in your `default_region`. The response's ETag is the
    contact's. With an `Idempotency-Key`, a retry (same key, same body, within 24 h) answers the first 201 again
    (`Idempotent-Replayed: true`) and creates nothing more; the same key with another body answers 422."""

    async def create() -> dict[str, object]:
        return await service.create_contact(session, user.id, body, fallback_region=_region(request))

    if idempotency_key is not None:  # the sync feature's hook (app/contacts/idempotency.py)
        return await idempotency.create_once(session, user.id, idempotency_key, body, create)
    return _written(response, await create())


@router.get("/{contact_id}", response_model=ContactRead, responses={**errors(401, 403, 429, 404), **_NOT_MODIFIED})
async def read_contact(
    contact_id: ContactId, user: ContactsUser, request: Request, if_none_match: IfNoneMatch = None
) -> Response:
    """One of your contacts, with its ETag (304 to a matching `If-None-Match`). Another user's contact, or one in
    the trash, answers 404."""
    prefetched = getattr(request.state, "prefetched_contact", None)
    async with read_session(request) as session:
        found = await service.get_contact_entity(session, contact_id, user.id, prefetched=prefetched)
    if found is None:
        raise service.ContactNotFound
    raw, etag = found
    if service.etag_matches(if_none_match, etag, weak=True):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    return _json(raw, etag=etag)


@router.put("/{contact_id}", response_model=ContactRead, responses={**errors(401, 403, 429, 404, 409), **_PRECONDITION})
async def replace_contact(
    contact_id: ContactId,
    body: ContactReplace,
    user: ContactsUser,
    session: SessionDep,
    request: Request,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, object]:
    """Replace every field of a contact; fields left out become empty (a v1 body with only `email`/`phone` leaves
    exactly those as the only entries). `uid` and the vCard properties the API does not show are kept."""
    contact = await service.update_contact(
        session, contact_id, user.id, body, partial=False, if_match=if_match, fallback_region=_region(request)
    )
    return _written(response, contact)


@router.patch(
    "/{contact_id}", response_model=ContactRead, responses={**errors(401, 403, 429, 404, 409), **_PRECONDITION}
)
async def update_contact(
    contact_id: ContactId,
    body: ContactUpdate,
    user: ContactsUser,
    session: SessionDep,
    request: Request,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, object]:
    """Change only the fields sent. `email`/`phone` alone change the primary entry (null removes it); a list
    replaces the whole list."""
    contact = await service.update_contact(
        session, contact_id, user.id, body, partial=True, if_match=if_match, fallback_region=_region(request)
    )
    return _written(response, contact)


@router.delete(
    "/{contact_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**errors(401, 403, 429, 404), **_PRECONDITION}
)
async def delete_contact(
    contact_id: ContactId, user: ContactsUser, session: SessionDep, if_match: IfMatch = None
) -> None:
    """Move a contact to the trash (`GET /contacts/trash`; restore with `POST /contacts/{id}/restore`). It then
    answers 404 everywhere else."""
    await service.delete_contact(session, contact_id, user.id, if_match=if_match)


# -- labels -----------------------------------------------------------------------------------------------------


@labels_router.get("", response_model=LabelList, responses={**errors(401, 403, 429), **_NOT_MODIFIED})
async def list_labels(user: ContactsUser, request: Request, if_none_match: IfNoneMatch = None) -> Response:
    """Every label of your contacts (trash excluded) with how many carry it, by name."""
    async with read_session(request) as session:
        raw = await labels.get_labels_json(session, user.id)
    return _list_response(raw, if_none_match)


@labels_router.patch("/{name:path}", response_model=LabelCount, responses=errors(401, 403, 429, 404))
async def rename_label(
    name: LabelName,
    user: ContactsUser,
    session: SessionDep,
    body: Annotated[LabelRename, Body(examples=[{"name": "Family"}])],
) -> dict[str, object]:
    """Rename a label on every contact that carries it (each a new version and a change); where a contact has
    the new name already, it keeps it once. 404 if no contact carries the label."""
    return await labels.rename_label(session, user.id, name, body.name)


@labels_router.delete("/{name:path}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 403, 429, 404))
async def delete_label(name: LabelName, user: ContactsUser, session: SessionDep) -> None:
    """Remove a label from every contact that carries it; the contacts stay. 404 if no contact carries it."""
    await labels.delete_label(session, user.id, name)
