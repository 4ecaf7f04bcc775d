"""SQL of the sync features: change sequence numbers, the change feed, the trash, tombstones, idempotency keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, func, insert, literal, or_, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts.models import Contact, ContactCount, ContactTombstone, IdempotencyKey
from app.core.db import utcnow

_CONTACTS = Contact.__table__.c
_TOMBSTONES = ContactTombstone.__table__.c


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


# -- the change feed's head ------------------------------------------------------------------------------------


async def change_head(session: AsyncSession, user_id: int) -> tuple[int, int]:
    """(the last change sequence number given out, the history floor) of the user: one primary-key read."""
    query = select(ContactCount.change_seq, ContactCount.history_floor).where(ContactCount.user_id == user_id)
    row = (await session.execute(query)).first()
    return (int(row[0]), int(row[1])) if row else (0, 0)


# -- the change feed --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeRow:
    id: int
    uid: str
    change_seq: int
    gone: bool  # trashed or purged: a "delete" for the feed


def _after(seq: ColumnElement[int], ident: ColumnElement[int], after_seq: int, after_id: int) -> ColumnElement[bool]:
    """Positions strictly after (after_seq, after_id) in (change_seq, id) order; after_id 0 means after every
    change numbered after_seq. Written so that the (user_id, change_seq) indexes serve the range."""
    if after_id == 0:
        return seq > after_seq
    return and_(seq >= after_seq, or_(seq > after_seq, ident > after_id))


async def changes_after(
    session: AsyncSession, user_id: int, after_seq: int, after_id: int, limit: int, *, live_only: bool
) -> list[ChangeRow]:
    """The user's changes after a position, in (change_seq, id) order, at most `limit`: each contact once, at its
    last change (live, trashed), and each purged contact's tombstone. One statement, so one snapshot: a second
    statement could see a later commit of one table and not of the other, and skip a change."""
    contacts: Select[Any] = (
        select(
            _CONTACTS.id.label("id"),
            _CONTACTS.uid.label("uid"),
            _CONTACTS.change_seq.label("change_seq"),
            _CONTACTS.deleted_at.is_not(None).label("gone"),
        )
        .where(_CONTACTS.user_id == user_id, _after(_CONTACTS.change_seq, _CONTACTS.id, after_seq, after_id))
        .order_by(_CONTACTS.change_seq, _CONTACTS.id)
        .limit(limit)
    )
    if live_only:
        contacts = contacts.where(_CONTACTS.deleted_at.is_(None))
        query = select(contacts.subquery())
    else:
        tombstones = (
            select(
                _TOMBSTONES.contact_id.label("id"),
                _TOMBSTONES.uid.label("uid"),
                _TOMBSTONES.change_seq.label("change_seq"),
                literal(True).label("gone"),
            )
            .where(
                _TOMBSTONES.user_id == user_id,
                _after(_TOMBSTONES.change_seq, _TOMBSTONES.contact_id, after_seq, after_id),
            )
            .order_by(_TOMBSTONES.change_seq, _TOMBSTONES.contact_id)
            .limit(limit)
        )
        # Each side is limited on its own index first; the union of at most 2 x limit rows is then ordered.
        both = union_all(select(contacts.subquery()), select(tombstones.subquery())).subquery()
        query = select(both)
    ordered = query.subquery()
    final = select(ordered).order_by(ordered.c.change_seq, ordered.c.id).limit(limit)
    rows = (await session.execute(final)).all()
    return [ChangeRow(int(r.id), str(r.uid), int(r.change_seq), bool(r.gone)) for r in rows]


async def live_rows(session: AsyncSession, user_id: int, contact_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The current rows of those of `contact_ids` that are the user's live contacts."""
    if not contact_ids:
        return {}
    query = select(Contact.__table__).where(
        _CONTACTS.user_id == user_id, _CONTACTS.id.in_(contact_ids), _CONTACTS.deleted_at.is_(None)
    )
    return {int(row["id"]): dict(row) for row in (await session.execute(query)).mappings()}


# -- the trash --------------------------------------------------------------------------------------------------


def _trashed(user_id: int) -> list[ColumnElement[bool]]:
    return [_CONTACTS.user_id == user_id, _CONTACTS.deleted_at.is_not(None)]


async def trash_page(
    session: AsyncSession, user_id: int, skip: int, limit: int, after: tuple[datetime, int] | None = None
) -> tuple[list[dict[str, Any]], int, bool]:
    """A page of the user's trash, most recently deleted first (after the (deleted_at, id) position `after`, if
    given), the number of contacts in the trash, and whether more follow the page. The partial index of trashed
    rows serves both queries."""
    where = _trashed(user_id)
    total = int(await session.scalar(select(func.count()).select_from(Contact.__table__).where(*where)) or 0)
    if after is not None:
        deleted_at, contact_id = after
        where.append(
            or_(
                _CONTACTS.deleted_at < deleted_at,
                and_(_CONTACTS.deleted_at == deleted_at, _CONTACTS.id < contact_id),
            )
        )
    elif skip >= total:
        return [], total, False
    query = (
        select(Contact.__table__)
        .where(*where)
        .order_by(_CONTACTS.deleted_at.desc(), _CONTACTS.id.desc())
        .offset(skip)
        .limit(limit + 1)
    )
    rows = [dict(row) for row in (await session.execute(query)).mappings()]
    return rows[:limit], total, len(rows) > limit


async def restore(session: AsyncSession, contact_id: int, user_id: int, change_seq: int) -> dict[str, Any] | None:
    """Bring a trashed contact back as it was (a new version, at `change_seq`); None if the user has no such
    contact in the trash. Its mirrored emails and labels stayed while it was in the trash."""
    statement = (
        update(Contact)
        .where(_CONTACTS.id == contact_id, *_trashed(user_id))
        .values(deleted_at=None, version=Contact.version + 1, change_seq=change_seq, updated_at=utcnow())
        .returning(*Contact.__table__.c)
    )
    row = (await session.execute(statement)).mappings().first()
    return dict(row) if row else None


async def purge(
    session: AsyncSession, user_id: int, contact_ids: list[int], before: datetime | None = None
) -> list[tuple[int, str]]:
    """Delete those of `contact_ids` that are in the user's trash (trashed before `before`, if given); (id, uid)
    of each one deleted. Their labels and emails go with them (ON DELETE CASCADE)."""
    where = [*_trashed(user_id), _CONTACTS.id.in_(contact_ids)]
    if before is not None:
        where.append(_CONTACTS.deleted_at < before)
    statement = delete(Contact).where(*where).returning(_CONTACTS.id, _CONTACTS.uid)
    deleted = [(int(row.id), str(row.uid)) for row in (await session.execute(statement)).all()]
    return sorted(deleted)


async def add_tombstones(session: AsyncSession, user_id: int, purged: list[tuple[int, str]], last_seq: int) -> None:
    """Remember purged contacts for the change feed, numbered last_seq-len+1..last_seq in the given order."""
    first = last_seq - len(purged) + 1
    now = utcnow()
    rows = [
        {"contact_id": cid, "user_id": user_id, "uid": uid, "change_seq": first + n, "purged_at": now}
        for n, (cid, uid) in enumerate(purged)
    ]
    if rows:
        await session.execute(insert(ContactTombstone), rows)


async def expired_trash(session: AsyncSession, before: datetime, limit: int) -> dict[int, list[int]]:
    """Up to `limit` contacts trashed before `before`, of every user, oldest first: {user_id: [contact ids]}."""
    query = (
        select(_CONTACTS.user_id, _CONTACTS.id)
        .where(_CONTACTS.deleted_at.is_not(None), _CONTACTS.deleted_at < before)
        .order_by(_CONTACTS.deleted_at)
        .limit(limit)
    )
    found: dict[int, list[int]] = {}
    for user_id, contact_id in (await session.execute(query)).all():
        found.setdefault(int(user_id), []).append(int(contact_id))
    return found


async def old_tombstones(session: AsyncSession, before: datetime, limit: int) -> dict[int, list[int]]:
    """Up to `limit` tombstones of contacts purged before `before`, oldest first: {user_id: [contact ids]}."""
    query = (
        select(_TOMBSTONES.user_id, _TOMBSTONES.contact_id)
        .where(_TOMBSTONES.purged_at < before)
        .order_by(_TOMBSTONES.purged_at)
        .limit(limit)
    )
    found: dict[int, list[int]] = {}
    for user_id, contact_id in (await session.execute(query)).all():
        found.setdefault(int(user_id), []).append(int(contact_id))
    return found


async def forget_tombstones(session: AsyncSession, user_id: int, contact_ids: list[int], before: datetime) -> int:
    """Delete those tombstones (if still older than `before`) and raise the user's history floor to the highest
    change number among them: change tokens below it can no longer be answered. Returns how many were deleted."""
    statement = (
        delete(ContactTombstone)
        .where(
            _TOMBSTONES.user_id == user_id,
            _TOMBSTONES.contact_id.in_(contact_ids),
            _TOMBSTONES.purged_at < before,
        )
        .returning(_TOMBSTONES.change_seq)
    )
    seqs = [int(seq) for seq in (await session.execute(statement)).scalars()]
    if seqs:
        await session.execute(
            update(ContactCount)
            .where(ContactCount.user_id == user_id, ContactCount.history_floor < max(seqs))
            .values(history_floor=max(seqs))
        )
    return len(seqs)


# -- idempotency keys -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredResponse:
    request_hash: str
    status_code: int | None
    body: str | None


async def claim_idempotency_key(
    session: AsyncSession, user_id: int, key: str, request_hash: str, expired_before: datetime
) -> StoredResponse | None:
    """Claim `key` for this transaction (None), or return what a committed request holds under it. A row older
    than `expired_before` counts as absent. On PostgreSQL a claim that another open transaction holds waits for
    it to end; on SQLite the first write already waits for the database's lock."""
    await session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id, IdempotencyKey.key == key, IdempotencyKey.created_at < expired_before
        )
    )
    statement = (
        _insert(session)(IdempotencyKey)
        .values(user_id=user_id, key=key, request_hash=request_hash, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=[IdempotencyKey.user_id, IdempotencyKey.key])
        .returning(IdempotencyKey.key)
    )
    if (await session.execute(statement)).first() is not None:
        return None
    query = select(IdempotencyKey.request_hash, IdempotencyKey.status_code, IdempotencyKey.response_body).where(
        IdempotencyKey.user_id == user_id, IdempotencyKey.key == key
    )
    row = (await session.execute(query)).first()
    if row is None:  # pragma: no cover - the holder's row cannot vanish between the two statements of one lock
        raise RuntimeError("idempotency key vanished")
    return StoredResponse(str(row[0]), row[1], row[2])


async def store_idempotent_response(session: AsyncSession, user_id: int, key: str, status_code: int, body: str) -> None:
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        .values(status_code=status_code, response_body=body)
    )


async def prune_idempotency_keys(session: AsyncSession, before: datetime, limit: int) -> int:
    """Delete up to `limit` keys created before `before`; how many were deleted."""
    oldest = (
        select(IdempotencyKey.user_id, IdempotencyKey.key)
        .where(IdempotencyKey.created_at < before)
        .order_by(IdempotencyKey.created_at)
        .limit(limit)
    )
    rows = (await session.execute(oldest)).all()
    if not rows:
        return 0
    matches = [and_(IdempotencyKey.user_id == row[0], IdempotencyKey.key == row[1]) for row in rows]
    result = await session.execute(delete(IdempotencyKey).where(or_(*matches), IdempotencyKey.created_at < before))
    return int(getattr(result, "rowcount", 0) or 0)
