"""Contacts: reads through the cache, writes that invalidate it around their commit."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import repository
from app.contacts.models import Contact, birthday_key
from app.contacts.schemas import ContactCreate, ContactRead, ContactUpdate
from app.core.cache import Kind, cache, dumps
from app.core.errors import Conflict, NotFound


class ContactNotFound(NotFound):
    """Contact not found."""

    code = "ContactNotFound"


class ContactEmailExists(Conflict):
    """Another of your contacts already has this email."""

    code = "ContactEmailExists"


class _CachedContact(ContactRead):
    """A cached value is served only if it is exactly a contact: every field, of its type, and nothing else."""

    model_config = ConfigDict(extra="forbid")


def contact_json(row: Any) -> dict[str, Any]:
    return ContactRead.model_validate(row).model_dump(mode="json")


def _page_json(rows: list[dict[str, Any]], total: int, skip: int, limit: int) -> dict[str, Any]:
    return {"items": [contact_json(row) for row in rows], "total": total, "skip": skip, "limit": limit}


# -- reads ----------------------------------------------------------------------------------------------------

# A user's cached pages share a bounded hash (CACHE_LIST_MAX_FIELDS, CACHE_LIST_MAX_BYTES): only pages within the
# first CACHED_SKIP_LIMIT rows and the first page of a search take a place in it. Deeper pages and further pages of
# a search are rarely read twice; they come from the database every time.
CACHED_SKIP_LIMIT = 500


def _worth_caching(skip: int, q: str | None = None) -> bool:
    return skip == 0 if q else skip < CACHED_SKIP_LIMIT


async def get_contact_json(
    db: AsyncSession, contact_id: int, user_id: int, *, prefetched: bytes | None = None
) -> bytes | None:
    """The contact's JSON, read through `contact:{id}:user:{user_id}`; None if the user has no such contact."""

    async def load() -> dict[str, Any] | None:
        row = await repository.get_row(db, contact_id, user_id)
        return contact_json(row) if row else None

    raw = await cache.read_through(
        Kind.contact,
        cache.contact_key(contact_id, user_id),
        load,
        cache.settings.cache_contact_ttl,
        prefetched=prefetched,
    )
    if raw is None:
        return None
    # Serve only what has the exact shape of one of this user's contacts (the key may have been written
    # by hand through `cache_contact`); anything else is read again from the database.
    try:
        contact = _CachedContact.model_validate_json(raw)
    except ValueError:
        contact = None
    if contact is not None and contact.id == contact_id and contact.user_id == user_id:
        return raw
    loaded = await load()
    return dumps(loaded) if loaded else None


async def get_contact_with_cache(db: AsyncSession, contact_id: int, user_id: int) -> dict[str, Any] | None:
    raw = await get_contact_json(db, contact_id, user_id)
    return json.loads(raw) if raw is not None else None


async def get_contacts_json(db: AsyncSession, user_id: int, skip: int, limit: int, q: str | None = None) -> bytes:
    """A page of the user's contacts (or of a search), cached as one field of the `contacts:{user_id}` hash."""
    q = (q or "").strip().lower() or None

    async def load() -> dict[str, Any]:
        rows, total = await repository.list_page(db, user_id, skip, limit, q)
        return _page_json(rows, total, skip, limit)

    if not _worth_caching(skip, q):
        return dumps(await load())
    field = f"list:{skip}:{limit}:{q or ''}"
    raw = await cache.read_through(
        Kind.contacts_list, cache.contacts_key(user_id), load, cache.settings.cache_contacts_list_ttl, hash_field=field
    )
    return raw or b"{}"


async def get_contacts_with_cache(
    db: AsyncSession, user_id: int, skip: int = 0, limit: int = 20, q: str | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(await get_contacts_json(db, user_id, skip, limit, q))
    return result


def birthday_window(today: date, days: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Birthday-key ranges covering today..today+days, and Feb 29 when the window holds the Feb 28 of a
    common year (where Feb 29 birthdays are celebrated)."""
    end = today + timedelta(days=days)
    if end.year == today.year:
        ranges = [(birthday_key(today) or 0, birthday_key(end) or 0)]
    else:
        ranges = [(birthday_key(today) or 0, 1231), (101, birthday_key(end) or 0)]
    extra: list[int] = []
    for year in range(today.year, end.year + 1):
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        if not leap and today <= date(year, 2, 28) <= end:
            extra.append(229)
            break
    return ranges, extra


async def get_birthdays_json(
    db: AsyncSession, user_id: int, days: int, skip: int, limit: int, today: date | None = None
) -> bytes:
    today = today or datetime.now(UTC).date()

    async def load() -> dict[str, Any]:
        ranges, extra = birthday_window(today, days)
        rows, total = await repository.birthdays_page(db, user_id, ranges, extra, birthday_key(today) or 0, skip, limit)
        return _page_json(rows, total, skip, limit)

    if not _worth_caching(skip):
        return dumps(await load())
    field = f"birthdays:{today.isoformat()}:{days}:{skip}:{limit}"
    raw = await cache.read_through(
        Kind.contacts_list, cache.contacts_key(user_id), load, cache.settings.cache_contacts_list_ttl, hash_field=field
    )
    return raw or b"{}"


# -- writes ---------------------------------------------------------------------------------------------------


def _invalidate_around_commit(db: AsyncSession, contact_id: int, user_id: int) -> None:
    """Tombstone the contact and the user's lists before the commit; delete them after it."""
    cache.invalidate_around_commit(db, cache.contact_key(contact_id, user_id), cache.contacts_key(user_id))


async def create_contact(db: AsyncSession, user_id: int, data: ContactCreate) -> dict[str, Any]:
    contact = Contact(user_id=user_id, **data.model_dump())
    try:
        await repository.add(db, contact)
    except repository.ContactEmailTaken as exc:
        raise ContactEmailExists from exc
    _invalidate_around_commit(db, contact.id, user_id)
    return contact_json(contact)


async def _owned_contact(db: AsyncSession, contact_id: int, user_id: int) -> Contact:
    contact = await repository.get(db, contact_id, user_id)
    if contact is None:
        raise ContactNotFound
    return contact


async def update_contact(
    db: AsyncSession, contact_id: int, user_id: int, data: ContactCreate | ContactUpdate, *, partial: bool
) -> dict[str, Any]:
    """PUT replaces every field (unset ones become empty); PATCH changes only the fields sent."""
    contact = await _owned_contact(db, contact_id, user_id)
    for name, value in data.model_dump(exclude_unset=partial).items():
        setattr(contact, name, value)
    try:
        await repository.save(db, contact)
    except repository.ContactEmailTaken as exc:
        raise ContactEmailExists from exc
    _invalidate_around_commit(db, contact_id, user_id)
    return contact_json(contact)


async def delete_contact(db: AsyncSession, contact_id: int, user_id: int) -> None:
    if not await repository.remove(db, contact_id, user_id):
        raise ContactNotFound
    _invalidate_around_commit(db, contact_id, user_id)


async def forget_contacts_of_user(db: AsyncSession, user_id: int) -> None:
    """The user is being deleted, their contacts with them (ON DELETE CASCADE): invalidate every cache key of
    theirs around the commit. Subscribed to `app.core.events.user_deleting` by the application."""
    keys = [cache.contact_key(contact_id, user_id) for contact_id in await repository.ids_of_user(db, user_id)]
    cache.invalidate_around_commit(db, cache.contacts_key(user_id), *keys)
