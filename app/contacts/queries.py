"""SQL of the contact lists: filters (search, label, favorite), sort orders, a page by `skip` or after a cursor's
sort key (keyset: its cost does not grow with the depth), and the birthday list. Only live contacts are listed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, String, and_, case, func, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts.models import Contact, ContactLabel, phone_digits
from app.contacts.repository import count_of_user, live

_COLUMNS = Contact.__table__.c
Sort = Literal["created", "name", "-name", "updated", "-updated"]
SORTS: tuple[Sort, ...] = ("created", "name", "-name", "updated", "-updated")
# A search that looks like a phone number (digits and separators only) also matches the digits alone.
_PHONE_LIKE = re.compile(r"[+0-9 ()./\-]+")


@dataclass(frozen=True)
class ListQuery:
    """Which contacts, in which order."""

    sort: Sort = "created"
    q: str | None = None
    label: str | None = None
    favorite: bool | None = None

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.label or self.favorite is not None)


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    total: int
    # The sort key of the page's last row when more rows follow it (the next cursor's position), else None.
    next_key: list[Any] | None


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(user_id: int, query: ListQuery) -> list[ColumnElement[bool]]:
    where = live(user_id)
    if query.q:
        needle = query.q.lower()
        matches: ColumnElement[bool] = _COLUMNS.search_text.like(f"%{_escape_like(needle)}%", escape="\\")
        digits = phone_digits(needle)
        if _PHONE_LIKE.fullmatch(needle) and len(digits) >= 3 and digits != needle:
            matches = or_(matches, _COLUMNS.search_text.like(f"%{digits}%"))
        where.append(matches)
    if query.label:
        labelled = select(ContactLabel.contact_id).where(
            ContactLabel.user_id == user_id, ContactLabel.name == query.label
        )
        where.append(_COLUMNS.id.in_(labelled))
    if query.favorite is not None:
        where.append(_COLUMNS.favorite.is_(query.favorite))
    return where


def sort_keys(sort: Sort) -> tuple[list[ColumnElement[Any]], bool]:
    """The sort key's columns (id last: every key is unique) and whether the order is descending. `name` is the
    last name, then the first name, case-insensitively (the ix_contacts_user_id_name index)."""
    descending = sort.startswith("-")
    if sort == "created":
        return [_COLUMNS.id], False  # creation order is id order, as v1 listed
    if sort.endswith("name"):
        last = func.lower(func.coalesce(_COLUMNS.last_name, ""), type_=String())
        return [last, func.lower(_COLUMNS.first_name, type_=String()), _COLUMNS.id], descending
    return [_COLUMNS.updated_at, _COLUMNS.id], descending


def key_of(sort: Sort, values: Sequence[Any]) -> list[Any]:
    """A sort key as JSON can carry it (a cursor), checked to be of the sort's shape (ValueError if not)."""
    if sort == "created":
        (contact_id,) = values
        return [int(contact_id)]
    if sort.endswith("name"):
        last, first, contact_id = values
        return [str(last), str(first), int(contact_id)]
    updated_at, contact_id = values
    stamp = updated_at if isinstance(updated_at, datetime) else datetime.fromisoformat(str(updated_at))
    if stamp.tzinfo is None:
        raise ValueError("naive timestamp")
    return [stamp.isoformat(), int(contact_id)]


def _key_values(sort: Sort, key: Sequence[Any]) -> list[Any]:
    values = list(key)
    if sort.endswith("updated"):
        values[0] = datetime.fromisoformat(values[0])
    return values


def _selected(where: Sequence[ColumnElement[bool]], keys: list[ColumnElement[Any]]) -> Select[Any]:
    labelled = [key.label(f"_sort{n}") for n, key in enumerate(keys)]
    return select(Contact.__table__, *labelled).where(*where)


def _order(keys: list[ColumnElement[Any]], descending: bool) -> list[ColumnElement[Any]]:
    # user_id first: a constant here, it lets the (user_id, ...) indexes serve the order in either direction.
    columns = [_COLUMNS.user_id, *keys]
    return [column.desc() for column in columns] if descending else [column.asc() for column in columns]


def _split(rows: Sequence[Any], size: int) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    contacts, keys = [], []
    for row in rows:
        data = dict(row)
        keys.append([data.pop(f"_sort{n}") for n in range(size)])
        contacts.append(data)
    return contacts, keys


async def _total(session: AsyncSession, user_id: int, query: ListQuery, where: list[ColumnElement[bool]]) -> int:
    if not query.filtered:
        return await count_of_user(session, user_id)
    return int(await session.scalar(select(func.count()).select_from(Contact.__table__).where(*where)) or 0)


async def page_by_skip(session: AsyncSession, user_id: int, query: ListQuery, skip: int, limit: int) -> Page:
    """One page at `skip` and the number of rows in all pages.

    A page past the middle is read from the far end, in reverse order, and turned around: OFFSET walks every
    row it skips, so this way a page costs O(min(skip, total - skip)) instead of O(skip), and the last page is as
    cheap as the first."""
    where = _where(user_id, query)
    total = await _total(session, user_id, query, where)
    if skip >= total:
        return Page([], total, None)
    keys, descending = sort_keys(query.sort)
    statement = _selected(where, keys)
    if skip > total // 2:
        size = min(limit, total - skip)
        reverse = statement.order_by(*_order(keys, not descending)).offset(total - skip - size).limit(size)
        rows = list(reversed((await session.execute(reverse)).mappings().all()))
    else:
        forward = statement.order_by(*_order(keys, descending)).offset(skip).limit(limit)
        rows = list((await session.execute(forward)).mappings().all())
    contacts, row_keys = _split(rows, len(keys))
    more = skip + len(contacts) < total
    return Page(contacts, total, key_of(query.sort, row_keys[-1]) if more and row_keys else None)


def after_statement(user_id: int, query: ListQuery, after: list[Any], limit: int) -> Select[Any]:
    """The rows after the one whose sort key is `after`, one more than `limit` (to know whether more follow). A
    row comparison on the sort key, which the (user_id, key...) index serves as a range: however deep the page, the
    walk starts at the key."""
    keys, descending = sort_keys(query.sort)
    values = [literal(value, type_=key.type) for key, value in zip(keys, _key_values(query.sort, after), strict=True)]
    if len(keys) == 1:
        beyond = keys[0] < values[0] if descending else keys[0] > values[0]
    else:
        beyond = tuple_(*keys) < tuple_(*values) if descending else tuple_(*keys) > tuple_(*values)
    return _selected([*_where(user_id, query), beyond], keys).order_by(*_order(keys, descending)).limit(limit + 1)


async def page_after(session: AsyncSession, user_id: int, query: ListQuery, after: list[Any], limit: int) -> Page:
    """The page after the row whose sort key is `after` (keyset: its cost does not grow with the depth)."""
    rows = list((await session.execute(after_statement(user_id, query, after, limit))).mappings().all())
    size = len(sort_keys(query.sort)[0])
    contacts, row_keys = _split(rows[:limit], size)
    more = len(rows) > limit
    total = await _total(session, user_id, query, _where(user_id, query))
    return Page(contacts, total, key_of(query.sort, row_keys[-1]) if more else None)


async def birthdays_page(
    session: AsyncSession,
    user_id: int,
    ranges: Sequence[tuple[int, int]],
    extra_keys: Sequence[int],
    today_key: int,
    skip: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    """Live contacts whose birthday key (month*100+day) falls in `ranges` or `extra_keys`, soonest first."""
    key = _COLUMNS.birthday_key
    conditions: list[ColumnElement[bool]] = [and_(key >= low, key <= high) for low, high in ranges]
    if extra_keys:
        conditions.append(key.in_(list(extra_keys)))
    where = [*live(user_id), key.is_not(None), or_(*conditions)]
    total = int(await session.scalar(select(func.count()).select_from(Contact.__table__).where(*where)) or 0)
    if skip >= total:
        return [], total
    order: list[ColumnElement[Any]] = [case((key >= today_key, 0), else_=1), key, _COLUMNS.id]
    statement = select(Contact.__table__).where(*where)
    if skip > total // 2:
        size = min(limit, total - skip)
        reverse = statement.order_by(*(c.desc() for c in order)).offset(total - skip - size).limit(size)
        rows = list(reversed((await session.execute(reverse)).mappings().all()))
    else:
        rows = list((await session.execute(statement.order_by(*order).offset(skip).limit(limit))).mappings().all())
    return [dict(row) for row in rows], total


async def rows_after_id(
    session: AsyncSession, user_id: int, query: ListQuery, after_id: int, limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` live contacts matching `query` (its sort ignored: id order) whose id is above `after_id`: an
    export walks the book batch by batch this way, holding one batch at a time."""
    where = [*_where(user_id, query), _COLUMNS.id > after_id]
    statement = select(Contact.__table__).where(*where).order_by(_COLUMNS.user_id, _COLUMNS.id).limit(limit)
    return [dict(row) for row in (await session.execute(statement)).mappings().all()]


async def rows_by_uids(session: AsyncSession, user_id: int, uids: Sequence[str]) -> list[dict[str, Any]]:
    """The live contacts of the user among `uids`, in one query (a CardDAV multiget asks for up to a few hundred)."""
    if not uids:
        return []
    statement = select(Contact.__table__).where(*live(user_id), _COLUMNS.uid.in_(list(uids)))
    return [dict(row) for row in (await session.execute(statement)).mappings().all()]
