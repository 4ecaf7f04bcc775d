"""CACHE_WRITE_POLICY: `strict` refuses a write whose tombstones cannot be placed before its commit (503, rolled
back), and with replicas counts a tombstone only once a replica has it (WAIT 1), so that no reader anywhere sees the
value from before an acknowledged write, whatever fails; `available` (the default) makes the write anyway.

The writer is the app in this process; "another process" is a second `Cache` on the same Redis topology. Redis
unreachable from the writer only is a cache bound to a port where nothing listens. The failover cases kill a real
master (of a Cluster slot, of a Sentinel group) right after the write and read what the promoted replica holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import repository
from app.contacts.service import contact_json
from app.core.cache import Cache, Kind, cache
from app.core.config import Settings
from app.core.db import Database
from tests.conftest import MakeCache, make_settings
from tests.factories import auth_headers, make_contact, make_user
from tests.servers import RedisProcess, free_port
from tests.topologies import (
    ClusterServers,
    SentinelGroup,
    cluster_settings,
    sentinel_settings,
    stopped,
    wait_until,
)

API = "/api/v1"
FAILOVER_TIMEOUT = 20.0


async def first_name_in_database(database: Database, contact_id: int) -> str:
    async with database.sessionmaker() as session:
        statement = text("SELECT first_name FROM contacts WHERE id = :id")
        return str((await session.execute(statement, {"id": contact_id})).scalar_one())


async def read_as_another_process(other: Cache, database: Database, contact_id: int, user_id: int) -> str:
    """What a reader in another process serves for the contact: the cache's value, else the database's."""
    key = other.contact_key(contact_id, user_id)
    async with database.sessionmaker() as session:

        async def load() -> Any:
            row = await repository.get_row(session, contact_id, user_id)
            return contact_json(row) if row else None

        raw = await other.read_through(Kind.contact, key, load, 60)
    assert raw is not None
    return str(json.loads(raw)["first_name"])


# -- Redis unreachable from the writer ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["strict", "available"])
async def test_a_write_whose_tombstone_cannot_reach_redis_is_refused_under_strict_and_made_under_available(
    client: Any,
    db: AsyncSession,
    settings: Settings,
    database: Database,
    reconfigure: Callable[..., Settings],
    policy: str,
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Before")
    headers = auth_headers(settings, user)
    reconfigure(redis_url=f"redis://127.0.0.1:{free_port()}/0", cache_write_policy=policy)  # nothing listens

    response = await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": "After"}, headers=headers)
    read = await client.get(f"{API}/contacts/{contact.id}", headers=headers)

    if policy == "strict":
        assert response.status_code == 503
        assert response.json()["error"] == "CacheWriteRefused"
        assert response.headers["Retry-After"] == "1"
        assert await first_name_in_database(database, contact.id) == "Before"  # rolled back
        assert (read.status_code, read.json()["first_name"]) == (200, "Before")  # reads keep working
    else:
        assert response.status_code == 200
        assert await first_name_in_database(database, contact.id) == "After"
        assert (read.status_code, read.json()["first_name"]) == (200, "After")


@pytest.mark.parametrize("policy", ["strict", "available"])
async def test_the_readme_limit_case_has_no_stale_read_under_strict(
    client: Any,
    db: AsyncSession,
    settings: Settings,
    database: Database,
    reconfigure: Callable[..., Settings],
    make_cache: MakeCache,
    policy: str,
) -> None:
    """The writer cannot reach Redis; a reader in another process can, and holds the contact cached."""
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Before")
    headers = auth_headers(settings, user)
    reader = make_cache(make_settings(database_url=settings.database_url, redis_url=settings.redis_url))
    assert await read_as_another_process(reader, database, contact.id, user.id) == "Before"  # now cached
    reconfigure(redis_url=f"redis://127.0.0.1:{free_port()}/0", cache_write_policy=policy)

    response = await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": "After"}, headers=headers)
    served = await read_as_another_process(reader, database, contact.id, user.id)
    stored = await first_name_in_database(database, contact.id)

    if policy == "strict":
        # Nothing was acknowledged, and what the reader serves is what the database holds: 0 stale reads.
        assert (response.status_code, response.json()["error"]) == (503, "CacheWriteRefused")
        assert served == stored == "Before"
    else:
        # The limit `available` keeps (the README's "Limit"): an acknowledged write, and the reader serves the
        # value from before it until the invalidation lands.
        assert response.status_code == 200
        assert (served, stored) == ("Before", "After")


# -- failover: the promoted replica ----------------------------------------------------------------------------------


def topology_settings(name: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings of a healthy, empty Cluster or Sentinel group (ids restart at 1 in every test)."""
    if name == "cluster":
        servers: ClusterServers = request.getfixturevalue("redis_cluster")
        servers.wait_healthy()
        servers.flush()
        return cluster_settings(servers)
    group: SentinelGroup = request.getfixturevalue("redis_sentinel")
    group.wait_healthy()
    group.flush()
    return sentinel_settings(group)


def master_and_replica(name: str, request: pytest.FixtureRequest, key: str) -> tuple[RedisProcess, RedisProcess]:
    if name == "cluster":
        servers: ClusterServers = request.getfixturevalue("redis_cluster")
        master = servers.master_of(key)
        return master, servers.replica_of(master)
    group: SentinelGroup = request.getfixturevalue("redis_sentinel")
    return group.master(), group.replica()


def wait_promoted(replica: RedisProcess) -> float:
    """Seconds until `replica` is a master (the cluster or the sentinels promoted it)."""
    began = time.monotonic()
    wait_until(
        lambda: redis.Redis(port=replica.port, socket_timeout=1).info("replication")["role"] == "master",
        FAILOVER_TIMEOUT,
        f"the promotion of {replica.address}",
        0.05,
    )
    return time.monotonic() - began


def restore(name: str, request: pytest.FixtureRequest, killed: RedisProcess) -> None:
    if name == "cluster":
        servers: ClusterServers = request.getfixturevalue("redis_cluster")
        servers.restart(killed)
        servers.wait_healthy()
    else:
        group: SentinelGroup = request.getfixturevalue("redis_sentinel")
        group.restart(killed)
        group.wait_healthy()


def raw(server: RedisProcess, key: str) -> bytes | None:
    """What one server holds at `key` (a cluster replica too: READONLY lets it answer instead of redirecting)."""
    connection = redis.Redis(port=server.port, socket_timeout=2, single_connection_client=True)
    try:
        with contextlib.suppress(redis.ResponseError):  # not in cluster mode
            connection.execute_command("READONLY")
        value = connection.get(key)
    finally:
        connection.close()
    return value if isinstance(value, bytes) else None


async def cached_everywhere(client: Any, url: str, headers: dict[str, str], key: str, replica: RedisProcess) -> bytes:
    """GET `url` until its value is cached and the replica has it too."""
    await client.get(url, headers=headers)
    await client.get(url, headers=headers)
    value = await asyncio.to_thread(wait_until, lambda: raw(replica, key), 5, f"{key} on the replica {replica.address}")
    assert isinstance(value, bytes)
    return value


@pytest.mark.parametrize("name", ["cluster", "sentinel"])
async def test_a_strict_write_survives_its_masters_death_right_after_it(
    client: Any,
    db: AsyncSession,
    settings: Settings,
    reconfigure: Callable[..., Settings],
    request: pytest.FixtureRequest,
    name: str,
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Before")
    headers = auth_headers(settings, user)
    url = f"{API}/contacts/{contact.id}"
    reconfigure(cache_write_policy="strict", **topology_settings(name, request))
    key = cache.contact_key(contact.id, user.id)
    master, replica = master_and_replica(name, request, key)
    assert b"Before" in await cached_everywhere(client, url, headers, key, replica)
    tombstoned: list[bytes | None] = []

    async def kill_after_the_tombstone(*keys: str) -> bool:
        placed = await original_tombstone(*keys)
        tombstoned.append(raw(replica, key))  # what the replica holds when the commit goes ahead
        return placed

    original_tombstone = cache.tombstone
    cache.tombstone = kill_after_the_tombstone  # type: ignore[method-assign]
    try:
        response = await client.patch(url, json={"first_name": "After"}, headers=headers)
    finally:
        del cache.tombstone
    master.kill()  # right after the acknowledged write
    try:
        promoted_in = await asyncio.to_thread(wait_promoted, replica)
        held = raw(replica, key)
        read = await client.get(url, headers=headers)
    finally:
        await asyncio.to_thread(restore, name, request, master)

    assert response.status_code == 200
    assert tombstoned == [b'{"__tomb__":1}'], "the commit went ahead before the replica had the tombstone"
    assert held is None or held.startswith(b'{"__tomb__"'), f"the promoted replica serves {held!r}"
    assert (read.status_code, read.json()["first_name"]) == (200, "After")
    assert promoted_in < FAILOVER_TIMEOUT


@pytest.mark.parametrize("name", ["cluster", "sentinel"])
async def test_a_strict_write_is_refused_while_no_replica_can_confirm_its_tombstone(
    client: Any,
    db: AsyncSession,
    settings: Settings,
    database: Database,
    reconfigure: Callable[..., Settings],
    request: pytest.FixtureRequest,
    name: str,
) -> None:
    """The replica is cut off (frozen, its link dropped): a failover now would promote a copy without the
    tombstone, so the write is refused; the master then dies and the promoted replica serves only what the
    database holds."""
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Before")
    headers = auth_headers(settings, user)
    url = f"{API}/contacts/{contact.id}"
    reconfigure(cache_write_policy="strict", **topology_settings(name, request))
    key = cache.contact_key(contact.id, user.id)
    master, replica = master_and_replica(name, request, key)
    assert b"Before" in await cached_everywhere(client, url, headers, key, replica)

    with stopped(replica):
        redis.Redis(port=master.port).client_kill_filter(_type="replica")
        began = time.monotonic()
        response = await client.patch(url, json={"first_name": "After"}, headers=headers)
        refused_in = time.monotonic() - began
        master.kill()
    try:
        await asyncio.to_thread(wait_promoted, replica)
        held = raw(replica, key)
    finally:
        await asyncio.to_thread(restore, name, request, master)

    assert (response.status_code, response.json()["error"]) == (503, "CacheWriteRefused")
    assert refused_in < settings.cache_op_timeout_cap + 0.5
    assert await first_name_in_database(database, contact.id) == "Before"
    assert held is not None
    assert json.loads(held)["first_name"] == "Before"  # the old value, and still the database's: not stale
