"""Helpers of the sync tests: a change-feed replica, the book as the database holds it, a commit that can be held."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import app.core.db as core_db
from app.contacts.models import Contact
from app.contacts.service import contact_json

API = "/api/v1"


class Replica:
    """A client's copy of an address book, kept by following the change feed."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str], limit: int = 100) -> None:
        self.client, self.headers, self.limit = client, headers, limit
        self.token: str | None = None
        self.contacts: dict[int, dict[str, Any]] = {}
        self.pages = 0

    async def poll(self) -> list[dict[str, Any]]:
        """One page: applied in order; the changes it brought."""
        params: dict[str, Any] = {"limit": self.limit}
        if self.token is not None:
            params["since"] = self.token
        response = await self.client.get(f"{API}/contacts/changes", params=params, headers=self.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        ids = [change["id"] for change in body["changes"]]
        assert len(ids) == len(set(ids)), f"a contact appears twice in one page: {ids}"
        for change in body["changes"]:
            if change["op"] == "upsert":
                assert change["contact"]["id"] == change["id"]
                assert change["contact"]["uid"] == change["uid"]
                self.contacts[change["id"]] = change["contact"]
            else:
                assert change["contact"] is None
                self.contacts.pop(change["id"], None)
        self.token = body["next_token"]
        self.pages += 1
        self.has_more = body["has_more"]
        return list(body["changes"])

    async def drain(self) -> list[dict[str, Any]]:
        """Pages until `has_more` is false; every change they brought."""
        seen = await self.poll()
        while self.has_more:
            seen += await self.poll()
        return seen


async def book(session: AsyncSession, user_id: int) -> dict[int, dict[str, Any]]:
    """The user's live contacts as the API shows them, read from the database now."""
    table = Contact.__table__
    query = select(table).where(table.c.user_id == user_id, table.c.deleted_at.is_(None))
    rows = (await session.execute(query)).mappings().all()
    await session.commit()  # end the read transaction: the next call sees later commits
    return {int(row["id"]): contact_json(dict(row)) for row in rows}


@asynccontextmanager
async def held_commits(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[[], Awaitable[asyncio.Event]]]:
    """`hold()` arms a gate for the next request commit: that commit waits (its transaction open, its change number
    taken) until the returned event is set. Yields `hold`; every gate left is opened at the end."""
    real_commit = core_db.commit
    gates: list[tuple[asyncio.Event, asyncio.Event]] = []
    opened: list[asyncio.Event] = []

    async def gated_commit(session: AsyncSession) -> None:
        if gates:
            reached, release = gates.pop(0)
            reached.set()
            await release.wait()
        await real_commit(session)

    async def hold() -> asyncio.Event:
        reached, release = asyncio.Event(), asyncio.Event()
        gates.append((reached, release))
        opened.append(release)
        release.reached = reached  # type: ignore[attr-defined]
        return release

    monkeypatch.setattr(core_db, "commit", gated_commit)
    try:
        yield hold
    finally:
        for release in opened:
            release.set()
        monkeypatch.setattr(core_db, "commit", real_commit)
