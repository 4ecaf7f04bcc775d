"""Contact lists through the cache: pages (by skip or cursor, in any sort, filtered by search, label or favorite)
and upcoming birthdays, each cached as one field of the user's bounded `contacts:{user_id}` hash."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import cursor as cursors
from app.contacts import queries
from app.contacts.models import birthday_key
from app.contacts.queries import ListQuery, Sort
from app.contacts.schemas import contact_json
from app.core.cache import Kind, cache, dumps

# A user's cached pages share a bounded hash (CACHE_LIST_MAX_FIELDS, CACHE_LIST_MAX_BYTES): only pages within the
# first CACHED_SKIP_LIMIT rows and the first page of a search or filter take a place in it. Deeper pages, further
# pages of a search and pages after a cursor are rarely read twice; they come from the database every time.
CACHED_SKIP_LIMIT = 500


def _worth_caching(skip: int, q: str | None = None) -> bool:
    return skip == 0 if q else skip < CACHED_SKIP_LIMIT


def _page_json(rows: list[dict[str, Any]], total: int, skip: int, limit: int) -> dict[str, Any]:
    return {"items": [contact_json(row) for row in rows], "total": total, "skip": skip, "limit": limit}


def _list_field(query: ListQuery, skip: int, limit: int) -> str:
    """The page's field in the user's hash: v1's `list:{skip}:{limit}:{q}` for the default order without filters,
    else every parameter in a JSON array (unambiguous whatever the search or label holds)."""
    if query == ListQuery(q=query.q):
        return f"list:{skip}:{limit}:{query.q or ''}"
    described = [query.sort, query.label, query.favorite, skip, limit, query.q]
    return "lists:" + json.dumps(described, ensure_ascii=False, separators=(",", ":"))


async def get_contacts_json(
    db: AsyncSession,
    user_id: int,
    skip: int,
    limit: int,
    q: str | None = None,
    *,
    sort: Sort = "created",
    label: str | None = None,
    favorite: bool | None = None,
    cursor: str | None = None,
    secret: str | None = None,
) -> bytes:
    """A page of the user's live contacts: `{items, total, skip, limit, next_cursor}`. With `cursor` (from an
    earlier page's `next_cursor`, for the same query), the page after it; `secret` signs cursors (the JWT key)."""
    query = ListQuery(sort=sort, q=(q or "").strip().lower() or None, label=label, favorite=favorite)
    key_secret = secret if secret is not None else cache.settings.jwt_key
    after = cursors.decode(key_secret, user_id, query, cursor) if cursor else None
    if after is not None and skip:
        raise cursors.InvalidCursor("A cursor continues a list by itself: send it without skip.")

    async def load() -> dict[str, Any]:
        if after is not None:
            page = await queries.page_after(db, user_id, query, after, limit)
        else:
            page = await queries.page_by_skip(db, user_id, query, skip, limit)
        next_cursor = cursors.encode(key_secret, user_id, query, page.next_key) if page.next_key else None
        return _page_json(page.rows, page.total, skip, limit) | {"next_cursor": next_cursor}

    if after is not None or not (skip == 0 if query.filtered else skip < CACHED_SKIP_LIMIT):
        return dumps(await load())
    raw = await cache.read_through(
        Kind.contacts_list,
        cache.contacts_key(user_id),
        load,
        cache.settings.cache_contacts_list_ttl,
        hash_field=_list_field(query, skip, limit),
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
        rows, total = await queries.birthdays_page(db, user_id, ranges, extra, birthday_key(today) or 0, skip, limit)
        return _page_json(rows, total, skip, limit)

    if not _worth_caching(skip):
        return dumps(await load())
    field = f"birthdays:{today.isoformat()}:{days}:{skip}:{limit}"
    raw = await cache.read_through(
        Kind.contacts_list, cache.contacts_key(user_id), load, cache.settings.cache_contacts_list_ttl, hash_field=field
    )
    return raw or b"{}"
