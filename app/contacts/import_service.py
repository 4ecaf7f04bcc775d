"""The contacts service's door for many contacts at once (app/interchange): a batch of imported records added in
a few statements under the same lock, change numbers and cache invalidation as every other write; the look-ups an
import matches its records by; the narrow read duplicates are found by; the width of a CSV export."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import repository
from app.contacts.models import Contact
from app.contacts.service import (
    _owned_contact,
    _set_imported,
    contact_by_uid,
    create_imported,
    export_batch,
    invalidate_around_commit,
    lock_address_book,
    save_imported,
    stage_imported,
    update_imported,
)

# The single-contact writes and reads an import uses live in the service (CardDAV uses them too).
__all__ = [
    "book_keys",
    "contact_by_uid",
    "contacts_by_ids",
    "count_of_user",
    "create_imported",
    "create_imported_many",
    "duplicate_keys",
    "export_batch",
    "live_contacts",
    "lock_address_book",
    "save_imported",
    "stage_imported",
    "update_imported",
    "widest_lists",
]


async def create_imported_many(
    db: AsyncSession, user_id: int, records: list[tuple[dict[str, Any], str | None, Any]], *, region: str | None
) -> list[Contact]:
    """Add many contacts read from a file at once, each (fields, uid, extra); the caller holds the lock and has
    made sure their uids are free. Numbered in order, counted, invalidated around the commit."""
    if not records:
        return []
    last = await repository.take_change_seq(db, user_id, count=len(records), contacts_delta=len(records))
    created = []
    for fields, uid, extra in records:
        contact = Contact(user_id=user_id, uid=uid, emails=[], phones=[])
        _set_imported(contact, fields, extra, region)
        created.append(contact)
    await repository.add_many(db, created, last - len(records) + 1)
    invalidate_around_commit(db, user_id, *(contact.id for contact in created))
    return created


async def book_keys(db: AsyncSession, user_id: int) -> list[tuple[int, str, str, str | None, bool]]:
    """Every contact of the user as (id, uid, first name, last name, live): what an import matches by."""
    return await repository.book_keys(db, user_id)


async def contacts_by_ids(db: AsyncSession, user_id: int, ids: list[int]) -> list[Contact]:
    return list(await repository.find_by_ids(db, user_id, ids))


async def widest_lists(db: AsyncSession, user_id: int) -> dict[str, int]:
    return await repository.widest_lists(db, user_id)


async def duplicate_keys(db: AsyncSession, user_id: int) -> list[tuple[int, str, str | None, str | None, Any, Any]]:
    return await repository.duplicate_keys(db, user_id)


async def live_contacts(db: AsyncSession, user_id: int, contact_ids: list[int]) -> list[Contact]:
    """The user's live contacts with these ids, in the order given; ContactNotFound if any is not one."""
    return [await _owned_contact(db, contact_id, user_id) for contact_id in contact_ids]


async def count_of_user(db: AsyncSession, user_id: int) -> int:
    """The size of the user's address book (trash excluded)."""
    return await repository.count_of_user(db, user_id)
