"""Invalidations that outlive their worker: a write whose tombstones could not be placed (Redis unreachable from
its worker) records its keys in the database, in its own transaction, and any worker replays them, so that the old
value does not outlive a writer that died before its retried deletion landed.

The writer is the app in this process, bound to a port where nothing listens; "another process" is a second
`Cache` on the tests' Redis. The writer's death (SIGKILL) is in tests/reliability/test_topology_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import Cache, cache
from app.core.config import Settings
from app.core.db import Database
from tests.conftest import MakeCache, make_settings
from tests.factories import auth_headers, make_contact, make_user
from tests.integration.test_cache_write_policy import read_as_another_process
from tests.servers import free_port

API = "/api/v1"


async def recorded(database: Database) -> list[list[str]]:
    async with database.sessionmaker() as session:
        rows = await session.execute(text("SELECT keys FROM cache_invalidations ORDER BY id"))
        return [json.loads(keys) for keys in rows.scalars()]


@pytest.fixture
def reader(settings: Settings, make_cache: MakeCache, database: Database) -> Cache:
    """A cache in "another process", on the tests' Redis, that replays recorded invalidations."""
    other = make_cache(
        make_settings(database_url=settings.database_url, redis_url=settings.redis_url, cache_replay_interval=0.1)
    )
    return other


async def test_a_write_whose_tombstones_failed_is_recorded_and_another_process_replays_it(
    client: Any,
    db: AsyncSession,
    settings: Settings,
    database: Database,
    reconfigure: Callable[..., Settings],
    reader: Cache,
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Before")
    headers = auth_headers(settings, user)
    assert await read_as_another_process(reader, database, contact.id, user.id) == "Before"  # cached
    reconfigure(redis_url=f"redis://127.0.0.1:{free_port()}/0", cache_replay_interval=1.0)  # the writer's view

    response = await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": "After"}, headers=headers)
    rows = await recorded(database)
    before_replay = await read_as_another_process(reader, database, contact.id, user.id)
    await cache.close()  # the writer goes away with its retries (in memory) still owed
    replayed = await reader.replay_recorded(database.sessionmaker)
    after_replay = await read_as_another_process(reader, database, contact.id, user.id)

    assert response.status_code == 200
    assert rows == [[cache.contact_key(contact.id, user.id), cache.contacts_key(user.id)]]
    assert before_replay == "Before"  # the window `available` leaves until a replay
    assert replayed == 1
    assert after_replay == "After"
    assert await recorded(database) == []


async def test_the_background_replay_ends_the_stale_window_within_its_interval(
    client: Any,
    db: AsyncSession,
    settings: Settings,
    database: Database,
    reconfigure: Callable[..., Settings],
    reader: Cache,
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Before")
    headers = auth_headers(settings, user)
    assert await read_as_another_process(reader, database, contact.id, user.id) == "Before"
    reconfigure(redis_url=f"redis://127.0.0.1:{free_port()}/0", cache_replay_interval=1.0)
    reader.start_replaying(database.sessionmaker)

    response = await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": "After"}, headers=headers)
    acknowledged = time.monotonic()
    served = "Before"
    while served != "After" and time.monotonic() - acknowledged < 3:
        await asyncio.sleep(0.02)
        served = await read_as_another_process(reader, database, contact.id, user.id)
    window = time.monotonic() - acknowledged

    assert response.status_code == 200
    assert served == "After"
    assert window < 3 * 0.1 + 0.5  # at most 1.5 intervals, and a little scheduling
    assert await recorded(database) == []


async def test_a_replay_that_cannot_reach_redis_keeps_its_rows(
    client: Any,
    db: AsyncSession,
    settings: Settings,
    database: Database,
    reconfigure: Callable[..., Settings],
    make_cache: MakeCache,
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user)
    headers = auth_headers(settings, user)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    reconfigure(redis_url=dead, cache_replay_interval=1.0)
    cut_off = make_cache(make_settings(database_url=settings.database_url, redis_url=dead, cache_replay_interval=1.0))
    cut_off.start_replaying(database.sessionmaker)

    await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": "After"}, headers=headers)

    assert await cut_off.replay_recorded(database.sessionmaker) == 0
    assert len(await recorded(database)) == 1


@pytest.mark.parametrize("case", ["tombstones placed", "strict refusal", "replays off"])
async def test_nothing_is_recorded_when_nothing_is_owed(
    client: Any,
    db: AsyncSession,
    settings: Settings,
    database: Database,
    reconfigure: Callable[..., Settings],
    case: str,
) -> None:
    """The healthy path costs no row; a refused write commits nothing; CACHE_REPLAY_INTERVAL=0 records nothing."""
    user = await make_user(db, settings)
    contact = await make_contact(db, user)
    headers = auth_headers(settings, user)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    if case == "tombstones placed":
        reconfigure(cache_replay_interval=1.0)
    elif case == "strict refusal":
        reconfigure(redis_url=dead, cache_replay_interval=1.0, cache_write_policy="strict")
    else:
        reconfigure(redis_url=dead, cache_replay_interval=0)

    response = await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": "After"}, headers=headers)

    assert response.status_code == (503 if case == "strict refusal" else 200)
    assert await recorded(database) == []
