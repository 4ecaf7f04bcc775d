"""SQL for contacts. Every query is scoped by the owner's id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts.models import Contact, birthday_key, search_text

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
    session: AsyncSession, where: Sequence[ColumnElement[bool]], order_by: Sequence[Any], skip: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    total = await session.scalar(select(func.count()).select_from(Contact.__table__).where(*where))
    query: Select[Any] = select(Contact.__table__).where(*where).order_by(*order_by).offset(skip).limit(limit)
    rows = (await session.execute(query)).mappings().all()
    return [dict(row) for row in rows], int(total or 0)


async def list_page(
    session: AsyncSession, user_id: int, skip: int, limit: int, q: str | None = None
) -> tuple[list[dict[str, Any]], int]:
    """A page of the user's contacts in id order, optionally those whose name or email contains `q`."""
    where = [_owned(user_id)]
    if q:
        where.append(_COLUMNS.search_text.like(f"%{_escape_like(q.lower())}%", escape="\\"))
    return await _page(session, where, [_COLUMNS.id], skip, limit)


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
    order = [case((key >= today_key, 0), else_=1), key, _COLUMNS.id]
    return await _page(session, where, order, skip, limit)


def _derive(contact: Contact) -> None:
    contact.search_text = search_text(contact.first_name, contact.last_name, contact.email)
    contact.birthday_key = birthday_key(contact.birthday)


async def _flush(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        raise ContactEmailTaken from exc


async def add(session: AsyncSession, contact: Contact) -> Contact:
    _derive(contact)
    session.add(contact)
    await _flush(session)
    return contact


async def save(session: AsyncSession, contact: Contact) -> Contact:
    _derive(contact)
    await _flush(session)
    return contact


async def remove(session: AsyncSession, contact_id: int, user_id: int) -> bool:
    result = await session.execute(delete(Contact).where(Contact.id == contact_id, Contact.user_id == user_id))
    return bool(getattr(result, "rowcount", 0))


async def ids_of_user(session: AsyncSession, user_id: int) -> list[int]:
    result = await session.execute(select(_COLUMNS.id).where(_owned(user_id)))
    return list(result.scalars())
