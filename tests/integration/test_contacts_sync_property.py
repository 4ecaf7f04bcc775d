"""Property: a change-feed reader's copy equals the book, whatever concurrent writers do.

Writers run truly concurrently: each request has a session and a connection of its own, and each commit is held
for a drawn delay after the transaction took its change number, so transactions overlap (on PostgreSQL, one that
took an earlier number may try to commit after a later one; on SQLite the database lock orders them). A reader
polls the feed in small pages all the while, then drains it; its copy must equal the live contacts.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import app.core.db as core_db
from tests.factories import auth_headers, make_user
from tests.sync_helpers import API, Replica, book

OPERATIONS = ("create", "update", "update", "trash", "restore", "purge")
commit_delay: contextvars.ContextVar[float] = contextvars.ContextVar("commit_delay", default=0.0)

operation = st.tuples(st.sampled_from(OPERATIONS), st.integers(0, 15), st.integers(0, 25))
plans = st.lists(st.lists(operation, min_size=1, max_size=6), min_size=2, max_size=4)


async def _write(client, headers, ids: list[int], kind: str, target: int, delay_ms: int, n: int) -> None:
    commit_delay.set(delay_ms / 1000)
    contact_id = ids[target % len(ids)]
    if kind == "create":
        response = await client.post(f"{API}/contacts", json={"first_name": f"W{n}"}, headers=headers)
        if response.status_code == 201:
            ids.append(response.json()["id"])
    elif kind == "update":
        response = await client.patch(f"{API}/contacts/{contact_id}", json={"last_name": f"L{n}"}, headers=headers)
    elif kind == "trash":
        response = await client.delete(f"{API}/contacts/{contact_id}", headers=headers)
    elif kind == "restore":
        response = await client.post(f"{API}/contacts/{contact_id}/restore", headers=headers)
    else:
        response = await client.delete(f"{API}/contacts/trash/{contact_id}", headers=headers)
    # 404 (or 409 for a purge of a live contact): the contact is not in the state the operation needs (live,
    # trashed, purged) at that moment.
    assert response.status_code in (200, 201, 204, 404, 409), response.text


@pytest.fixture
def slow_commits(monkeypatch):
    real_commit = core_db.commit

    async def delayed_commit(session) -> None:
        delay = commit_delay.get()
        if delay and session.in_transaction():
            await asyncio.sleep(delay)
        await real_commit(session)

    monkeypatch.setattr(core_db, "commit", delayed_commit)


@hypothesis_settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=plans)
async def test_a_feed_readers_copy_equals_the_book_under_concurrent_writers(
    plan: list[list[tuple[str, int, int]]], client, db, settings, slow_commits
):
    owner = await make_user(db, settings)  # a user per example: examples share the database
    headers = auth_headers(settings, owner)
    ids: list[int] = []
    for n in range(4):
        response = await client.post(f"{API}/contacts", json={"first_name": f"Seed{n}"}, headers=headers)
        ids.append(response.json()["id"])
    replica = Replica(client, headers, limit=3)
    writing = True
    counter = iter(range(10**6))

    async def writer(operations: list[tuple[str, int, int]]) -> None:
        for kind, target, delay_ms in operations:
            await _write(client, headers, ids, kind, target, delay_ms, next(counter))

    async def reader() -> None:
        while writing:
            await replica.poll()
            await asyncio.sleep(0)

    reading = asyncio.create_task(reader())
    try:
        await asyncio.gather(*(writer(operations) for operations in plan))
    finally:
        writing = False
        await reading
    await replica.drain()

    expected: dict[int, dict[str, Any]] = await book(db, owner.id)
    assert replica.contacts == expected
