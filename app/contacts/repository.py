"""SQL for contacts. Every query is scoped by the owner's id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts.models import Contact, ContactCount, birthday_key, search_text

_COLUMNS = Contact.__table__.c


class ContactEmailTaken(Exception):
    pass


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _owned(user_id: int) -> ColumnElement[bool]:
    return _COLUMNS.user_id == user_id


async def get_row(session: AsyncSession, contact_id: int, user_id: int) -> dict[str, Any] | None:
    """One contact as a plain row (a Core select: no ORM identity map on the read path)."""
    result = await session.execute(select(Contact.__table__).where(_COLUMNS.id == contact_id, _owned(user_id)))
    row = result.mappings().first()
    return dict(row) if row else None


async def get(session: AsyncSession, contact_id: int, user_id: int) -> Contact | None:
    result = await session.execute(select(Contact).where(Contact.id == contact_id, Contact.user_id == user_id))
    return result.scalar_one_or_none()


async def _page(
    session: AsyncSession,
    where: Sequence[ColumnElement[bool]],
    order_by: Sequence[ColumnElement[Any]],
    skip: int,
    limit: int,
    total: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page and the number of rows in all pages (counted here unless the caller knows it).

    A page past the middle is read from the far end, in reverse order, and turned around: OFFSET walks every
    row it skips, so this way a page costs O(min(skip, total - skip)) instead of O(skip), and the last page is as
    cheap as the first."""
    if total is None:
        total = int(await session.scalar(select(func.count()).select_from(Contact.__table__).where(*where)) or 0)
    if skip >= total:
        return [], total
    query: Select[Any] = select(Contact.__table__).where(*where)
    if skip > total // 2:
        size = min(limit, total - skip)
        query = query.order_by(*(column.desc() for column in order_by)).offset(total - skip - size).limit(size)
        rows = list(reversed((await session.execute(query)).mappings().all()))
    else:
        rows = list((await session.execute(query.order_by(*order_by).offset(skip).limit(limit))).mappings().all())
    return [dict(row) for row in rows], total


async def count_of_user(session: AsyncSession, user_id: int) -> int:
    """The size of the user's address book, from `contact_counts` (one primary-key read)."""
    stored = await session.scalar(select(ContactCount.contacts).where(ContactCount.user_id == user_id))
    return int(stored or 0)


async def list_page(
    session: AsyncSession, user_id: int, skip: int, limit: int, q: str | None = None
) -> tuple[list[dict[str, Any]], int]:
    """A page of the user's contacts in id order, optionally those whose name or email contains `q`."""
    where = [_owned(user_id)]
    # Ordered by (user_id, id), which is id order for one user, so that the (user_id, id) index serves both the
    # filter and the order in either direction; by id alone PostgreSQL may walk the primary key and filter.
    order = [_COLUMNS.user_id, _COLUMNS.id]
    if q:
        where.append(_COLUMNS.search_text.like(f"%{_escape_like(q.lower())}%", escape="\\"))
        return await _page(session, where, order, skip, limit)
    return await _page(session, where, order, skip, limit, await count_of_user(session, user_id))


async def birthdays_page(
    session: AsyncSession,
    user_id: int,
    ranges: Sequence[tuple[int, int]],
    extra_keys: Sequence[int],
    today_key: int,
    skip: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    """Contacts whose birthday key (month*100+day) falls in `ranges` or `extra_keys`, soonest first."""
    key = _COLUMNS.birthday_key
    conditions: list[ColumnElement[bool]] = [and_(key >= low, key <= high) for low, high in ranges]
    if extra_keys:
        conditions.append(key.in_(list(extra_keys)))
    where = [_owned(user_id), key.is_not(None), or_(*conditions)]
    order: list[ColumnElement[Any]] = [case((key >= today_key, 0), else_=1), key, _COLUMNS.id]
    return await _page(session, where, order, skip, limit)


def _derive(contact: Contact) -> None:
    contact.search_text = search_text(contact.first_name, contact.last_name, contact.email)
    contact.birthday_key = birthday_key(contact.birthday)


async def _flush(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        raise ContactEmailTaken from exc


async def _count_change(session: AsyncSession, user_id: int, added: bool) -> None:
    """Keep `contact_counts` in step, in the same transaction as the insert or delete it counts. The row is
    locked by the first writer until it commits, so concurrent writes of one user count one after another."""
    if added:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(ContactCount).values(user_id=user_id, contacts=1)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[ContactCount.user_id],
                set_={"contacts": ContactCount.contacts + statement.excluded.contacts},
            )
        )
    else:
        await session.execute(
            update(ContactCount)
            .where(ContactCount.user_id == user_id, ContactCount.contacts > 0)
            .values(contacts=ContactCount.contacts - 1)
        )


async def add(session: AsyncSession, contact: Contact) -> Contact:
    _derive(contact)
    session.add(contact)
    await _flush(session)
    await _count_change(session, contact.user_id, added=True)
    return contact


async def save(session: AsyncSession, contact: Contact) -> Contact:
    _derive(contact)
    await _flush(session)
    return contact


async def remove(session: AsyncSession, contact_id: int, user_id: int) -> bool:
    result = await session.execute(delete(Contact).where(Contact.id == contact_id, Contact.user_id == user_id))
    removed = bool(getattr(result, "rowcount", 0))
    if removed:
        await _count_change(session, user_id, added=False)
    return removed


async def ids_of_user(session: AsyncSession, user_id: int) -> list[int]:
    result = await session.execute(select(_COLUMNS.id).where(_owned(user_id)))
    return list(result.scalars())
