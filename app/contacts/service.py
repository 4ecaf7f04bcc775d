"""Contacts: single reads through the cache, and the writes (create, replace, update, move to the trash), each a
new version under the user's change-sequence lock, invalidating the cache around its commit. Lists are in
`listing.py`, labels in `labels.py`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import queries, repository
from app.contacts.entries import Entry, needs_region, same_email, same_phone, stored_phones, with_primary
from app.contacts.listing import (
    CACHED_SKIP_LIMIT,
    birthday_window,
    get_birthdays_json,
    get_contacts_json,
    get_contacts_with_cache,
)
from app.contacts.models import Contact
from app.contacts.queries import ListQuery
from app.contacts.schemas import ContactCreate, ContactRead, ContactReplace, ContactUpdate, contact_json, etag_of
from app.core.cache import Kind, cache, dumps
from app.core.errors import AppError, Conflict, NotFound

# The lists live in listing.py; the spec's service names are kept here.
__all__ = [
    "CACHED_SKIP_LIMIT",
    "ContactEmailExists",
    "ContactNotFound",
    "ContactUidExists",
    "PreconditionFailed",
    "birthday_window",
    "contact_json",
    "create_contact",
    "delete_contact",
    "get_birthdays_json",
    "get_contact_entity",
    "get_contact_json",
    "get_contact_with_cache",
    "get_contacts_json",
    "get_contacts_with_cache",
    "update_contact",
]


class ContactNotFound(NotFound):
    """Contact not found."""

    code = "ContactNotFound"


class ContactEmailExists(Conflict):
    """Another of your contacts already has this email."""

    code = "ContactEmailExists"


class ContactUidExists(Conflict):
    """Another of your contacts (perhaps in the trash) already has this uid."""

    code = "ContactUidExists"


class PreconditionFailed(AppError):
    """The contact has changed since the version named in If-Match; read it again (its ETag is in the response)."""

    code = "PreconditionFailed"
    status_code = 412

    def __init__(self, current_etag: str) -> None:
        super().__init__()
        self.headers = {"ETag": current_etag}


class _CachedContact(ContactRead):
    """A cached value is served only if it is exactly a contact: every field, of its type, and nothing else."""

    model_config = ConfigDict(extra="forbid")


# -- conditional requests ---------------------------------------------------------------------------------------


def _tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def etag_matches(header: str | None, etag: str, *, weak: bool) -> bool:
    """Whether an If-Match (strong comparison: a weak tag never matches) or If-None-Match (`weak`: W/ ignored)
    header names `etag`; `*` names any current version."""
    if header is None:
        return False
    for tag in _tags(header):
        if tag == "*" or tag == etag:
            return True
        if weak and tag.startswith("W/") and tag[2:] == etag:
            return True
    return False


def check_if_match(if_match: str | None, contact: Contact) -> None:
    """Nothing to check without If-Match (the last write wins); else it must name the current version."""
    current = etag_of(contact.id, contact.version)
    if if_match is not None and not etag_matches(if_match, current, weak=False):
        raise PreconditionFailed(current)


# -- reads ------------------------------------------------------------------------------------------------------


async def get_contact_entity(
    db: AsyncSession, contact_id: int, user_id: int, *, prefetched: bytes | None = None
) -> tuple[bytes, str] | None:
    """The contact's JSON and ETag, read through `contact:{id}:user:{user_id}`; None if the user has no such live
    contact."""

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
        return raw, contact.etag
    loaded = await load()
    return (dumps(loaded), str(loaded["etag"])) if loaded else None


async def get_contact_json(
    db: AsyncSession, contact_id: int, user_id: int, *, prefetched: bytes | None = None
) -> bytes | None:
    """The contact's JSON (see `get_contact_entity`)."""
    found = await get_contact_entity(db, contact_id, user_id, prefetched=prefetched)
    return found[0] if found else None


async def get_contact_with_cache(db: AsyncSession, contact_id: int, user_id: int) -> dict[str, Any] | None:
    raw = await get_contact_json(db, contact_id, user_id)
    return json.loads(raw) if raw is not None else None


# -- writes -----------------------------------------------------------------------------------------------------

# What a write sets as sent (PATCH) or replaces (PUT); emails and phones are resolved with v1's email and phone.
_PLAIN_FIELDS = (
    "first_name",
    "middle_name",
    "last_name",
    "prefix",
    "suffix",
    "nickname",
    "organization",
    "job_title",
    "labels",
    "favorite",
    "birthday",
    "anniversary",
    "notes",
)


def invalidate_around_commit(db: AsyncSession, user_id: int, *contact_ids: int) -> None:
    """Tombstone the contacts' keys and the user's lists (pages, searches, labels, the change feed's head: every
    field of `contacts:{user_id}`) before the commit; delete them after it."""
    keys = [cache.contact_key(contact_id, user_id) for contact_id in contact_ids]
    cache.invalidate_around_commit(db, *keys, cache.contacts_key(user_id))


def _entries(
    current: list[Entry],
    data: BaseModel,
    single: str,
    plural: str,
    partial: bool,
    same: Callable[[str, str], bool],
) -> list[Entry]:
    """A list after a write: the list sent; else v1's single value sent (PATCH: it becomes the primary entry's
    value; PUT: the only entry); else unchanged (PATCH) or empty (PUT)."""
    sent = data.model_fields_set
    if plural in sent:
        return [entry.model_dump() for entry in getattr(data, plural)]
    if single in sent:
        value = getattr(data, single)
        if partial:
            return with_primary(current, value, same)
        return [{"value": value, "label": None, "primary": True}] if value else []
    return current if partial else []


async def _apply(
    db: AsyncSession,
    contact: Contact,
    data: ContactReplace | ContactUpdate,
    *,
    partial: bool,
    fallback_region: str | None,
) -> None:
    """Set the contact's fields from a body. `vcard_extra` and `uid` are never changed by a REST write."""
    sent = data.model_fields_set
    for name in _PLAIN_FIELDS:
        if not partial or name in sent:
            setattr(contact, name, getattr(data, name))
    for name in ("addresses", "urls"):
        if not partial or name in sent:
            setattr(contact, name, [entry.model_dump() for entry in getattr(data, name)])
    previous_phones = list(contact.phones or [])
    contact.emails = _entries(list(contact.emails or []), data, "email", "emails", partial, same_email)
    phones = _entries(previous_phones, data, "phone", "phones", partial, same_phone)
    region = None
    if needs_region(phones, previous_phones):
        region = await repository.phone_region(db, contact.user_id) or fallback_region
    contact.phones = stored_phones(phones, previous_phones, region)


async def create_contact(
    db: AsyncSession, user_id: int, data: ContactCreate, *, fallback_region: str | None = None
) -> dict[str, Any]:
    """Add a contact (version 1, the user's next change number). `fallback_region`: the region national phone
    numbers are read in when the user has none (DEFAULT_PHONE_REGION)."""
    change_seq = await repository.take_change_seq(db, user_id, contacts_delta=1)
    contact = Contact(user_id=user_id, uid=data.uid, emails=[], phones=[])
    await _apply(db, contact, data, partial=False, fallback_region=fallback_region)
    try:
        await repository.add(db, contact, change_seq=change_seq, unique_emails=True)
    except repository.ContactEmailTaken as exc:
        raise ContactEmailExists from exc
    except repository.ContactUidTaken as exc:
        raise ContactUidExists from exc
    invalidate_around_commit(db, user_id, contact.id)
    return contact_json(contact)


async def _owned_contact(db: AsyncSession, contact_id: int, user_id: int) -> Contact:
    contact = await repository.get(db, contact_id, user_id)
    if contact is None:
        raise ContactNotFound
    return contact


async def update_contact(
    db: AsyncSession,
    contact_id: int,
    user_id: int,
    data: ContactReplace | ContactUpdate,
    *,
    partial: bool,
    if_match: str | None = None,
    fallback_region: str | None = None,
) -> dict[str, Any]:
    """PUT replaces every field (unset ones become empty); PATCH changes only the fields sent. A write that changes
    something is a new version; one that changes nothing is not a write. With `if_match`, only the version it
    names is changed (else 412, nothing written)."""
    await repository.take_change_seq(db, user_id, count=0)  # first the lock, then the current row
    contact = await _owned_contact(db, contact_id, user_id)
    check_if_match(if_match, contact)
    await _apply(db, contact, data, partial=partial, fallback_region=fallback_region)
    if not repository.changes_anything(db, contact):
        return contact_json(contact)  # not a write: no new version, no change number
    change_seq = await repository.take_change_seq(db, user_id)
    try:
        await repository.save(db, contact, change_seq, unique_emails=True)
    except repository.ContactEmailTaken as exc:
        raise ContactEmailExists from exc
    invalidate_around_commit(db, user_id, contact_id)
    return contact_json(contact)


async def delete_contact(db: AsyncSession, contact_id: int, user_id: int, *, if_match: str | None = None) -> None:
    """Move a contact to the trash (a change: a new version at the user's next change number); it then answers
    404 everywhere but the trash."""
    change_seq = await repository.take_change_seq(db, user_id, contacts_delta=-1)
    contact = await _owned_contact(db, contact_id, user_id)
    check_if_match(if_match, contact)
    await repository.trash(db, contact, change_seq)
    invalidate_around_commit(db, user_id, contact_id)


async def forget_contacts_of_user(db: AsyncSession, user_id: int) -> None:
    """The user is being deleted, their contacts with them (ON DELETE CASCADE): invalidate every cache key of
    theirs around the commit. Subscribed to `app.core.events.user_deleting` by the application."""
    invalidate_around_commit(db, user_id, *await repository.ids_of_user(db, user_id))


# -- imports and exports (app/interchange): the same writes, for records read from a file -----------------------

# What an import writes: every field the API shows but the derived ones, and the vCard properties it does not.
IMPORTED_FIELDS = (*_PLAIN_FIELDS, "emails", "addresses", "urls")


async def lock_address_book(db: AsyncSession, user_id: int) -> str | None:
    """Take the user's write lock (held to the end of the transaction, as every write does first) and answer the
    region the user's national phone numbers are read in."""
    await repository.take_change_seq(db, user_id, count=0)
    return await repository.phone_region(db, user_id)


async def contact_by_uid(db: AsyncSession, user_id: int, uid: str) -> Contact | None:
    return await repository.find_by_uid(db, user_id, uid)


def _set_imported(contact: Contact, fields: dict[str, Any], extra: Any, region: str | None) -> None:
    for name in IMPORTED_FIELDS:
        value = fields.get(name)
        setattr(contact, name, list(value or []) if name in ("emails", "addresses", "urls", "labels") else value)
    contact.favorite = bool(fields.get("favorite"))
    contact.phones = stored_phones(list(fields.get("phones") or []), list(contact.phones or []), region)
    contact.vcard_extra = extra


async def create_imported(
    db: AsyncSession, user_id: int, fields: dict[str, Any], *, uid: str | None, extra: Any, region: str | None
) -> Contact:
    """Add a contact read from a file (the caller holds the lock: `lock_address_book`). Unlike a REST create, an
    email another contact holds is kept (an import may hold duplicates, found later by the duplicates list)."""
    change_seq = await repository.take_change_seq(db, user_id, contacts_delta=1)
    contact = Contact(user_id=user_id, uid=uid, emails=[], phones=[])
    _set_imported(contact, fields, extra, region)
    await repository.add(db, contact, change_seq=change_seq)
    invalidate_around_commit(db, user_id, contact.id)
    return contact


def stage_imported(
    db: AsyncSession, contact: Contact, fields: dict[str, Any], *, extra: Any, region: str | None
) -> bool:
    """Give a contact (in memory) the fields read from a file; answers whether that changes it (then
    `save_imported` writes it)."""
    _set_imported(contact, fields, extra, region)
    return repository.changes_anything(db, contact)


async def save_imported(db: AsyncSession, contact: Contact) -> None:
    """Write a contact changed by `stage_imported` as a new version."""
    change_seq = await repository.take_change_seq(db, contact.user_id)
    await repository.save(db, contact, change_seq)
    invalidate_around_commit(db, contact.user_id, contact.id)


async def update_imported(
    db: AsyncSession, contact: Contact, fields: dict[str, Any], *, extra: Any, region: str | None
) -> bool:
    """Give a contact the fields read from a file; a new version only if something changed (answered)."""
    if not stage_imported(db, contact, fields, extra=extra, region=region):
        return False
    await save_imported(db, contact)
    return True


async def export_batch(
    db: AsyncSession, user_id: int, *, after_id: int, limit: int, label: str | None = None, q: str | None = None
) -> list[dict[str, Any]]:
    """The next `limit` live contacts after `after_id` in id order (as rows), carrying `label` or matching `q`."""
    query = ListQuery(q=(q or "").strip().lower() or None, label=label)
    return await queries.rows_after_id(db, user_id, query, after_id, limit)


async def rows_by_uids(db: AsyncSession, user_id: int, uids: list[str]) -> list[dict[str, Any]]:
    """The user's live contacts among `uids` (as rows), in one query."""
    return await queries.rows_by_uids(db, user_id, uids)
