"""Labels (groups of contacts): each with its count of live contacts, through the cache; renamed or removed on every
contact of the user in one call, each contact a new version and a change."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import repository
from app.contacts.service import invalidate_around_commit
from app.core.cache import Kind, cache
from app.core.errors import NotFound

LABELS_FIELD = "labels"


class LabelNotFound(NotFound):
    """None of your contacts carries this label."""

    code = "LabelNotFound"


async def get_labels_json(db: AsyncSession, user_id: int) -> bytes:
    """`{"labels": [{"name", "contacts"}]}` by name, cached as a field of the user's list hash (every contact
    write deletes it)."""

    async def load() -> dict[str, Any]:
        counts = await repository.label_counts(db, user_id)
        return {"labels": [{"name": name, "contacts": count} for name, count in counts]}

    raw = await cache.read_through(
        Kind.contacts_list,
        cache.contacts_key(user_id),
        load,
        cache.settings.cache_contacts_list_ttl,
        hash_field=LABELS_FIELD,
    )
    return raw or b'{"labels": []}'


async def _relabel(db: AsyncSession, user_id: int, old: str, new: str | None) -> None:
    await repository.take_change_seq(db, user_id, count=0)  # the lock first, then the contacts to change
    contacts = await repository.with_label(db, user_id, old)
    if not contacts:
        raise LabelNotFound
    if new == old:
        return
    last_seq = await repository.take_change_seq(db, user_id, count=len(contacts))
    await repository.relabel(db, contacts, old, new, last_seq)
    invalidate_around_commit(db, user_id, *(contact.id for contact in contacts))


async def rename_label(db: AsyncSession, user_id: int, old: str, new: str) -> dict[str, Any]:
    """Rename a label on every contact carrying it (trashed ones too); a contact that already has the new name
    keeps it once. The label with its live contact count afterwards."""
    await _relabel(db, user_id, old, new)
    count = dict(await repository.label_counts(db, user_id)).get(new, 0)
    return {"name": new, "contacts": count}


async def delete_label(db: AsyncSession, user_id: int, name: str) -> None:
    """Remove a label from every contact carrying it (the contacts stay)."""
    await _relabel(db, user_id, name, None)
