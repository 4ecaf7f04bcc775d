"""The contact routes: your address book over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from app.auth.principal import BearerToken, resolve_principal
from app.auth.schemas import AuthUser
from app.contacts import service
from app.contacts.schemas import ContactCreate, ContactRead, ContactUpdate, SearchQuery
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

ContactId = Annotated[int, Path(ge=1, le=MAX_ID, description="The contact's id")]
Skip = Annotated[int, Query(ge=0, le=MAX_SKIP)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


def _json(raw: bytes, status_code: int = 200) -> Response:
    # Cached JSON goes out as it is stored: no parse and re-encode on the hot path.
    return Response(content=raw, status_code=status_code, media_type="application/json")


@router.get("", response_model=Page[ContactRead], responses=errors(401, 403, 429))
async def list_contacts(
    user: ContactsUser,
    session: SessionDep,
    skip: Skip = 0,
    limit: Limit = 20,
    q: Annotated[SearchQuery | None, Query(description="Case-insensitive search in names and email")] = None,
) -> Response:
    """A page of your contacts in creation order; with `q`, those whose first name, last name or email
    contains it."""
    return _json(await service.get_contacts_json(session, user.id, skip, limit, q))


@router.get("/birthdays", response_model=Page[ContactRead], responses=errors(401, 403, 429))
async def upcoming_birthdays(
    user: ContactsUser,
    session: SessionDep,
    days: Annotated[int, Query(ge=0, le=365, description="How many days ahead, today included")] = 7,
    skip: Skip = 0,
    limit: Limit = 20,
) -> Response:
    """Your contacts whose next birthday falls within the next `days` days, soonest first. Feb 29 birthdays
    fall on Feb 28 in common years."""
    return _json(await service.get_birthdays_json(session, user.id, days, skip, limit))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ContactRead, responses=errors(401, 403, 429, 409))
async def create_contact(body: ContactCreate, user: ContactsUser, session: SessionDep) -> dict[str, object]:
    """Add a contact to your address book. Emails are unique per address book, ignoring case."""
    return await service.create_contact(session, user.id, body)


@router.get("/{contact_id}", response_model=ContactRead, responses=errors(401, 403, 429, 404))
async def read_contact(contact_id: ContactId, user: ContactsUser, request: Request) -> Response:
    """One of your contacts. Another user's contact answers 404."""
    prefetched = getattr(request.state, "prefetched_contact", None)
    async with read_session(request) as session:
        raw = await service.get_contact_json(session, contact_id, user.id, prefetched=prefetched)
    if raw is None:
        raise service.ContactNotFound
    return _json(raw)


@router.put("/{contact_id}", response_model=ContactRead, responses=errors(401, 403, 429, 404, 409))
async def replace_contact(
    contact_id: ContactId, body: ContactCreate, user: ContactsUser, session: SessionDep
) -> dict[str, object]:
    """Replace every field of a contact; fields left out become empty."""
    return await service.update_contact(session, contact_id, user.id, body, partial=False)


@router.patch("/{contact_id}", response_model=ContactRead, responses=errors(401, 403, 429, 404, 409))
async def update_contact(
    contact_id: ContactId, body: ContactUpdate, user: ContactsUser, session: SessionDep
) -> dict[str, object]:
    """Change only the fields sent."""
    return await service.update_contact(session, contact_id, user.id, body, partial=True)


@router.delete("/{contact_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 403, 429, 404))
async def delete_contact(contact_id: ContactId, user: ContactsUser, session: SessionDep) -> None:
    """Delete a contact."""
    await service.delete_contact(session, contact_id, user.id)
