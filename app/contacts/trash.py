"""The trash: deleted contacts kept TRASH_RETENTION_DAYS, listed, restored whole or purged (leaving a tombstone for
the change feed), and the periodic clean-up that purges them, forgets old tombstones and idempotency keys."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import repository as contacts_repository
from app.contacts import sync_repository as repository
from app.contacts.cursor import InvalidCursor
from app.contacts.service import contact_json
from app.contacts.sync_schemas import trashed_json
from app.core.cache import Kind, cache, dumps
from app.core.config import Settings
from app.core.db import Database, commit, utcnow
from app.core.errors import Conflict, NotFound

logger = logging.getLogger(__name__)

# Work per clean-up pass is bounded: at most this many contacts, tombstones and keys each, in transactions of one
# user's rows at a time.
CLEANUP_BATCH = 500
IDEMPOTENCY_TTL = timedelta(hours=24)


class TrashedContactNotFound(NotFound):
    """No such contact in your trash."""

    code = "TrashedContactNotFound"


class ContactNotInTrash(Conflict):
    """The contact is in your address book, not in the trash: DELETE /contacts/{id} moves it there first."""

    code = "ContactNotInTrash"


def _invalidate_around_commit(db: AsyncSession, user_id: int, contact_ids: list[int]) -> None:
    """The user's lists (the trash pages and the change feed's head live there) and each contact's key."""
    keys = [cache.contact_key(contact_id, user_id) for contact_id in contact_ids]
    cache.invalidate_around_commit(db, cache.contacts_key(user_id), *keys)


def _cursor_mac(settings: Settings, user_id: int, payload: bytes) -> bytes:
    message = b"contacts-trash-cursor\x00" + str(user_id).encode() + b"\x00" + payload
    return hmac.new(settings.jwt_key.encode(), message, hashlib.sha256).digest()[:16]


def encode_cursor(settings: Settings, user_id: int, deleted_at: datetime, contact_id: int) -> str:
    payload = f"{deleted_at.isoformat()}|{contact_id}".encode()
    return base64.urlsafe_b64encode(payload + _cursor_mac(settings, user_id, payload)).rstrip(b"=").decode()


def decode_cursor(settings: Settings, user_id: int, cursor: str) -> tuple[datetime, int]:
    """The (deleted_at, id) position a trash cursor of this user stands for; InvalidCursor for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload, mac = raw[:-16], raw[-16:]
        if not hmac.compare_digest(mac, _cursor_mac(settings, user_id, payload)):
            raise InvalidCursor
        moment, contact_id = payload.decode().split("|")
        return datetime.fromisoformat(moment), int(contact_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor from exc


async def get_trash_json(
    db: AsyncSession, settings: Settings, user_id: int, skip: int, limit: int, cursor: str | None = None
) -> bytes:
    """A page of the trash, most recently deleted first, with a `next_cursor` that continues after it. The first
    page is cached as a field of the user's list hash, which every contact write (trash and restore included)
    invalidates around its commit."""
    after = decode_cursor(settings, user_id, cursor) if cursor else None

    async def load() -> dict[str, Any]:
        rows, total, more = await repository.trash_page(db, user_id, skip, limit, after)
        last = rows[-1] if rows and more else None
        return {
            "items": [trashed_json(row) for row in rows],
            "total": total,
            "skip": skip,
            "limit": limit,
            "next_cursor": encode_cursor(settings, user_id, last["deleted_at"], last["id"]) if last else None,
        }

    if skip != 0 or after is not None:
        return dumps(await load())
    raw = await cache.read_through(
        Kind.contacts_list,
        cache.contacts_key(user_id),
        load,
        cache.settings.cache_contacts_list_ttl,
        hash_field=f"trash:{limit}",
    )
    return raw or dumps(await load())


async def restore_contact(db: AsyncSession, contact_id: int, user_id: int) -> dict[str, Any]:
    """Bring a contact back from the trash as it was: a change (new version and change number). Never refused
    for an email another live contact holds meanwhile: nothing of the contact is lost. Restoring a contact that
    is not in the trash (a retried restore) changes nothing and answers it as it is."""
    live = await contacts_repository.get_row(db, contact_id, user_id)
    if live is not None:
        return contact_json(live)
    change_seq = await contacts_repository.take_change_seq(db, user_id, contacts_delta=1)
    row = await repository.restore(db, contact_id, user_id, change_seq)
    if row is None:
        raise TrashedContactNotFound
    _invalidate_around_commit(db, user_id, [contact_id])
    return contact_json(row)


async def purge_contact(db: AsyncSession, contact_id: int, user_id: int) -> None:
    """Delete a contact of the trash for good; the change feed reports it as deleted (a tombstone)."""
    change_seq = await contacts_repository.take_change_seq(db, user_id)
    purged = await repository.purge(db, user_id, [contact_id])
    if not purged:
        if await contacts_repository.get_row(db, contact_id, user_id) is not None:
            raise ContactNotInTrash
        raise TrashedContactNotFound
    await repository.add_tombstones(db, user_id, purged, change_seq)
    _invalidate_around_commit(db, user_id, [contact_id])


# -- the periodic clean-up ----------------------------------------------------------------------------------------


@dataclass
class Cleanup:
    purged: int = 0
    tombstones_forgotten: int = 0
    idempotency_keys_pruned: int = 0


async def _purge_expired_of_user(database: Database, user_id: int, contact_ids: list[int], before: datetime) -> int:
    async with database.sessionmaker() as db:
        # Lock the user's change counter before any contact row, as every write does (no deadlock with them).
        await contacts_repository.take_change_seq(db, user_id, count=0)
        purged = await repository.purge(db, user_id, contact_ids, before)
        if purged:
            last_seq = await contacts_repository.take_change_seq(db, user_id, count=len(purged))
            await repository.add_tombstones(db, user_id, purged, last_seq)
            _invalidate_around_commit(db, user_id, [contact_id for contact_id, _ in purged])
        await commit(db)
        return len(purged)


async def _forget_tombstones_of_user(database: Database, user_id: int, contact_ids: list[int], before: datetime) -> int:
    async with database.sessionmaker() as db:
        await contacts_repository.take_change_seq(db, user_id, count=0)
        forgotten = await repository.forget_tombstones(db, user_id, contact_ids, before)
        if forgotten:
            cache.invalidate_around_commit(db, cache.contacts_key(user_id))  # the cached history floor
        await commit(db)
        return forgotten


async def clean_up(database: Database, settings: Settings, now: datetime | None = None) -> Cleanup:
    """One bounded pass: purge contacts trashed more than TRASH_RETENTION_DAYS ago, forget tombstones older than
    SYNC_HISTORY_DAYS (raising each user's history floor), prune idempotency keys older than 24 hours. Safe to run
    in several workers at once: each purge re-checks its rows under the user's lock, so a contact is purged once."""
    now = now or utcnow()
    done = Cleanup()
    async with database.sessionmaker() as db:
        expired = await repository.expired_trash(db, now - timedelta(days=settings.trash_retention_days), CLEANUP_BATCH)
        old = await repository.old_tombstones(db, now - timedelta(days=settings.sync_history_days), CLEANUP_BATCH)
    for user_id, contact_ids in expired.items():
        before = now - timedelta(days=settings.trash_retention_days)
        done.purged += await _purge_expired_of_user(database, user_id, contact_ids, before)
    for user_id, contact_ids in old.items():
        before = now - timedelta(days=settings.sync_history_days)
        done.tombstones_forgotten += await _forget_tombstones_of_user(database, user_id, contact_ids, before)
    async with database.sessionmaker() as db:
        done.idempotency_keys_pruned = await repository.prune_idempotency_keys(db, now - IDEMPOTENCY_TTL, CLEANUP_BATCH)
        await commit(db)
    return done


async def run_clean_up_periodically(database: Database, settings: Settings) -> None:
    """`clean_up` every SYNC_CLEANUP_INTERVAL seconds, first after a random part of it (workers started together
    spread out), for as long as the application runs. A failed pass is logged and retried at the next."""
    interval = settings.sync_cleanup_interval
    await asyncio.sleep(random.uniform(0.1, 1.0) * interval)  # noqa: S311 - spreading, not security
    while True:
        try:
            done = await clean_up(database, settings)
            if done.purged or done.tombstones_forgotten or done.idempotency_keys_pruned:
                logger.info("sync clean-up: %s", done)
        except Exception:
            logger.exception("sync clean-up failed; retrying at the next interval")
        await asyncio.sleep(interval)
