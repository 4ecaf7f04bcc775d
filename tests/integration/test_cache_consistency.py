"""Consistency of the lease-based cache: no read is staler than a write acknowledged before it started.

The randomized checker runs histories of concurrent reads and writes against two "app instances" in this
process, each with its own Cache and its own Database engine, sharing one Redis and one database. A read
goes through `Cache.read_through` with a loader reading the row in the instance's own session (what
`app.contacts.service.get_contact_json` does); a write updates the row in its own session, commits, then
invalidates the key (what the service's after-commit hook does). The contact's `notes` hold a version number
that every write increments in SQL (`UPDATE ... SET notes = notes + 1 RETURNING notes`), so versions follow
the commit order even with concurrent writers.

Check (linearizability of each key's reads against acknowledged writes): a read must return a version >= the
highest version written by a write that ended (commit and invalidation done) before the read started. Random
delays of 0-20 ms are injected between the database read and the fill (`Cache.before_fill`).

A control runs the same checker against the textbook cache-aside (GET; on a miss read the database and SET
unconditionally): it must find stale reads, which shows the checker can fail.

Run with `-s` to see the figures. The seed of each run is printed; CACHE_CHECKER_SEED=<n> replays one.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import Integer, String, Table, cast, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import repository
from app.contacts.models import Contact
from app.contacts.service import contact_json
from app.core.cache import Backend, Cache, Kind, LeaseState, MemoryBackend, RedisBackend, dumps
from app.core.cache import cache as global_cache
from app.core.config import Settings
from app.core.db import Database, query_counter
from tests.cache_helpers import counter
from tests.conftest import make_settings
from tests.factories import auth_headers, make_contact, make_user

CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
TTL = 60
BASE_SEED = int(os.environ.get("CACHE_CHECKER_SEED", random.SystemRandom().randrange(1_000_000)))


# ----------------------------------------------------------------------------------------------------------------
# App instances, the caches under test and the control
# ----------------------------------------------------------------------------------------------------------------


class NaiveCache:
    """The textbook cache-aside the leases exist to fix: GET; on a miss read the database, then SET whatever was
    read, unconditionally. A fill that lands after a write's DEL puts the old row back."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = Redis.from_url(url)
        self.prefix = prefix
        self.before_fill: Callable[[str], Awaitable[None]] | None = None

    def contact_key(self, contact_id: int, user_id: int) -> str:
        return f"{self.prefix}contact:{contact_id}:user:{user_id}"

    def loading(self, key: str) -> bool:
        return False  # no single flight

    async def read_through(self, kind: Kind, key: str, loader: Callable[[], Awaitable[Any]], ttl: int) -> bytes | None:
        raw = await self.client.get(key)
        if isinstance(raw, bytes):
            return raw
        data = await loader()
        if data is None:
            return None
        value = dumps(data)
        if self.before_fill is not None:
            await self.before_fill(key)
        await self.client.set(key, value, ex=ttl)
        return value

    async def invalidate(self, *keys: str) -> bool:
        await self.client.delete(*keys)
        return True

    async def close(self) -> None:
        await self.client.aclose()


class LaggyBackend:
    """A backend whose replies reach the caller late: the command runs on the server at once, then the reply
    takes `lag(op)` seconds on the way back (network latency, a busy event loop). `executed[op]` is set each
    time an `op` has run on the server."""

    def __init__(self, inner: Backend, lag: Callable[[str], float]) -> None:
        self.inner = inner
        self.name = inner.name
        self.lag = lag
        self.executed: dict[str, asyncio.Event] = {}

    def _event(self, op: str) -> asyncio.Event:
        return self.executed.setdefault(op, asyncio.Event())

    async def _reply(self, op: str, call: Awaitable[Any]) -> Any:
        result = await call
        self._event(op).set()
        delay = self.lag(op)
        if delay > 0:
            await asyncio.sleep(delay)
        return result

    async def get(self, keys: list[tuple[str, str | None]]) -> list[bytes | None]:
        return await self._reply("get", self.inner.get(keys))  # type: ignore[no-any-return]

    async def get_or_lease(
        self, key: str, hash_field: str | None, token: str, lease_ms: int, key_ttl: int
    ) -> tuple[LeaseState, bytes | None]:
        return await self._reply(  # type: ignore[no-any-return]
            "get_or_lease", self.inner.get_or_lease(key, hash_field, token, lease_ms, key_ttl)
        )

    async def fill(self, key: str, hash_field: str | None, token: str, value: bytes, ttl: int) -> bool:
        return await self._reply("fill", self.inner.fill(key, hash_field, token, value, ttl))  # type: ignore[no-any-return]

    async def release(self, key: str, hash_field: str | None, token: str) -> bool:
        return await self._reply("release", self.inner.release(key, hash_field, token))  # type: ignore[no-any-return]

    async def store(self, key: str, value: bytes, ttl: int) -> bool:
        return await self._reply("store", self.inner.store(key, value, ttl))  # type: ignore[no-any-return]

    async def tombstone(self, keys: list[tuple[str, bool]], ttl_ms: int) -> None:
        await self._reply("tombstone", self.inner.tombstone(keys, ttl_ms))

    async def delete(self, keys: list[str]) -> None:
        await self._reply("delete", self.inner.delete(keys))

    async def ping(self) -> bool:
        return await self._reply("ping", self.inner.ping())  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class AppInstance:
    """One process of the service: its own cache and its own database engine."""

    name: str
    cache: Any  # Cache or NaiveCache
    database: Database
    deferred_invalidations: int = 0

    async def read(self, contact_id: int, user_id: int) -> int:
        async with self.database.sessionmaker() as session:

            async def load() -> dict[str, Any] | None:
                row = await repository.get_row(session, contact_id, user_id)
                return contact_json(row) if row else None

            raw = await self.cache.read_through(Kind.contact, self.cache.contact_key(contact_id, user_id), load, TTL)
        assert raw is not None, f"contact {contact_id} not found"
        data = json.loads(raw)
        assert isinstance(data.get("notes"), str), f"unexpected value for contact {contact_id}: {raw!r}"
        return int(data["notes"])

    async def write(self, contact_id: int, user_id: int) -> int:
        """Increment the version in the database, commit, then invalidate (the service's write path)."""
        async with self.database.sessionmaker() as session:
            result = await session.execute(
                update(CONTACTS)
                .where(CONTACTS.c.id == contact_id, CONTACTS.c.user_id == user_id)
                .values(notes=cast(cast(CONTACTS.c.notes, Integer) + 1, String))
                .returning(CONTACTS.c.notes)
            )
            version = int(result.scalar_one())
            await session.commit()
        if not await self.cache.invalidate(self.cache.contact_key(contact_id, user_id)):
            self.deferred_invalidations += 1
        return version


# ----------------------------------------------------------------------------------------------------------------
# The checker
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Op:
    kind: str  # "read" or "write"
    target: int
    start: float
    end: float
    version: int
    instance: str


@dataclass
class Verdict:
    histories: int = 0
    operations: int = 0
    reads: int = 0
    writes: int = 0
    overlapping: int = 0  # reads that overlapped a write of their key (the ones that can go wrong)
    stale: list[str] = field(default_factory=list)
    future: list[str] = field(default_factory=list)

    def add(self, other: Verdict) -> None:
        self.histories += other.histories
        self.operations += other.operations
        self.reads += other.reads
        self.writes += other.writes
        self.overlapping += other.overlapping
        self.stale += other.stale
        self.future += other.future


def check_history(ops: list[Op], initial: dict[int, int]) -> Verdict:
    """Every read's version >= the last version acknowledged before it started, and <= the highest version of
    a write that began before it ended (nothing is read from the future)."""
    verdict = Verdict(histories=1, operations=len(ops))
    for target, baseline in initial.items():
        writes = [op for op in ops if op.kind == "write" and op.target == target]
        by_end = sorted(writes, key=lambda op: op.end)
        ends = [op.end for op in by_end]
        acked_max: list[int] = []
        for op in by_end:
            acked_max.append(max(op.version, acked_max[-1] if acked_max else baseline))
        by_start = sorted(writes, key=lambda op: op.start)
        starts = [op.start for op in by_start]
        started_max: list[int] = []
        for op in by_start:
            started_max.append(max(op.version, started_max[-1] if started_max else baseline))
        verdict.writes += len(writes)
        for read in (op for op in ops if op.kind == "read" and op.target == target):
            verdict.reads += 1
            acked = bisect.bisect_left(ends, read.start)  # writes with end < read.start
            required = acked_max[acked - 1] if acked else baseline
            begun = bisect.bisect_left(starts, read.end)  # writes with start < read.end
            possible = started_max[begun - 1] if begun else baseline
            if begun > acked:
                verdict.overlapping += 1
            if read.version < required:
                verdict.stale.append(
                    f"key {target}: read on {read.instance} [{read.start:.4f}, {read.end:.4f}] returned v{read.version}"
                    f" but v{required} was acknowledged before it started"
                )
            if read.version > possible:
                verdict.future.append(f"key {target}: read returned v{read.version}, no write of it had begun")
    return verdict


async def current_versions(database: Database, targets: list[tuple[int, int]]) -> dict[int, int]:
    async with database.sessionmaker() as session:
        rows = await session.execute(
            select(CONTACTS.c.id, CONTACTS.c.notes).where(CONTACTS.c.id.in_([c for c, _ in targets]))
        )
        return {int(cid): int(notes) for cid, notes in rows}


async def run_history(
    instances: list[AppInstance],
    targets: list[tuple[int, int]],
    database: Database,
    rng: random.Random,
    *,
    operations: int,
    tasks_per_instance: int,
    write_ratio: float,
) -> Verdict:
    initial = await current_versions(database, targets)
    ops: list[Op] = []
    remaining = operations

    async def worker(instance: AppInstance) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            index = rng.randrange(len(targets))
            contact_id, user_id = targets[index]
            is_write = rng.random() < write_ratio
            # Diagnostic only (private state): was a load of this key in flight in this instance, so that the
            # read joins it rather than leading its own?
            in_flight = instance.cache.loading(instance.cache.contact_key(contact_id, user_id))
            where = f"{instance.name}/{'write' if is_write else 'joined' if in_flight else 'led'}"
            start = time.perf_counter()
            if is_write:
                version = await instance.write(contact_id, user_id)
            else:
                version = await instance.read(contact_id, user_id)
            end = time.perf_counter()
            ops.append(Op("write" if is_write else "read", contact_id, start, end, version, where))
            pause = rng.choice((0.0, 0.0, rng.uniform(0, 0.003)))
            await asyncio.sleep(pause)

    await asyncio.gather(*(worker(instance) for instance in instances for _ in range(tasks_per_instance)))
    return check_history(ops, initial)


def fill_delays(rng: random.Random, low: float = 0.0, high: float = 0.020) -> Callable[[str], Awaitable[None]]:
    async def before_fill(key: str) -> None:
        await asyncio.sleep(rng.uniform(low, high))

    return before_fill


async def run_checker(
    label: str,
    instances: list[AppInstance],
    targets: list[tuple[int, int]],
    database: Database,
    reset: Callable[[list[str]], Awaitable[Any]],
    *,
    rounds: int,
    operations: int,
    tasks_per_instance: int,
    write_ratio: float = 0.3,
    seed: int = BASE_SEED,
) -> Verdict:
    total = Verdict()
    began = time.perf_counter()
    for round_number in range(rounds):
        rng = random.Random(seed * 1000 + round_number)
        for instance in instances:
            instance.cache.before_fill = fill_delays(rng)
        # Each history starts from an empty cache.
        await reset([instances[0].cache.contact_key(cid, uid) for cid, uid in targets])
        verdict = await run_history(
            instances,
            targets,
            database,
            rng,
            operations=operations,
            tasks_per_instance=tasks_per_instance,
            write_ratio=write_ratio,
        )
        total.add(verdict)
    elapsed = time.perf_counter() - began
    deferred = sum(instance.deferred_invalidations for instance in instances)
    print(
        f"\n[{label}] seed={seed} instances={len(instances)} tasks/instance={tasks_per_instance} keys={len(targets)}"
        f" histories={total.histories} operations={total.operations} writes={total.writes}"
        f" reads checked={total.reads} (overlapping a write: {total.overlapping})"
        f" stale reads={len(total.stale)} reads from the future={len(total.future)}"
        f" deferred invalidations={deferred} in {elapsed:.1f} s"
    )
    for line in total.stale[:5]:
        print(f"[{label}]   stale: {line}")
    return total


# ----------------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
async def targets(db: AsyncSession, settings: Settings) -> list[tuple[int, int]]:
    """Three contacts of one user, at version 0."""
    user = await make_user(db, settings)
    contacts = [await make_contact(db, user, notes="0") for _ in range(3)]
    return [(contact.id, user.id) for contact in contacts]


# The checker's caches run with a key prefix (CACHE_KEY_PREFIX), as a deployment sharing its Redis would.
PREFIX = f"consistency-{os.getpid()}-{secrets.token_hex(3)}:"


def instance_settings(settings: Settings, redis_url: str | None, **overrides: Any) -> Settings:
    # A generous operation timeout: the checker is about the lease logic on a healthy Redis, and a DEL that
    # times out on a busy test machine would be deferred in its own process only (documented).
    values: dict[str, Any] = {
        "database_url": settings.database_url,
        "cache_op_timeout": 0.5,
        "cache_key_prefix": PREFIX,
    }
    if redis_url is not None:
        values["redis_url"] = redis_url
    values.update(overrides)
    return make_settings(**values)


@pytest.fixture
async def cache_redis(redis_client: Redis) -> Redis:
    """The test session's Redis database, emptied for this test."""
    await redis_client.flushdb()
    return redis_client


@pytest.fixture
async def make_instance(settings: Settings) -> AsyncIterator[Callable[..., AppInstance]]:
    """Builds app instances (a cache and a Database each) and closes them all afterwards."""
    made: list[AppInstance] = []

    def build(name: str, cache: Any, instance_settings_: Settings) -> AppInstance:
        instance = AppInstance(name, cache, Database.from_settings(instance_settings_))
        made.append(instance)
        return instance

    yield build
    for instance in made:
        await instance.cache.close()
        await instance.database.dispose()


# ----------------------------------------------------------------------------------------------------------------
# 1. No stale read after an acknowledged write (and the control)
# ----------------------------------------------------------------------------------------------------------------


async def test_no_stale_read_after_an_acknowledged_write_across_two_instances(
    targets: list[tuple[int, int]],
    settings: Settings,
    redis_url: str,
    cache_redis: Redis,
    database: Database,
    make_instance: Callable[..., AppInstance],
) -> None:
    s = instance_settings(settings, redis_url)
    instances = [make_instance(name, Cache(s), s) for name in ("app-a", "app-b")]
    verdict = await run_checker(
        "lease cache, 2 instances",
        instances,
        targets,
        database,
        lambda keys: cache_redis.delete(*keys),
        rounds=40,
        operations=200,
        tasks_per_instance=8,
    )
    assert verdict.operations == 40 * 200
    assert verdict.overlapping > 100, "too few reads overlapped a write for the check to mean anything"
    assert sum(i.deferred_invalidations for i in instances) == 0, "an invalidation timed out on a healthy Redis"
    assert not verdict.future, verdict.future[:5]
    assert not verdict.stale, f"{len(verdict.stale)} stale reads, e.g. {verdict.stale[:5]}"


async def test_no_stale_read_when_redis_replies_arrive_late(
    targets: list[tuple[int, int]],
    settings: Settings,
    redis_url: str,
    cache_redis: Redis,
    database: Database,
    make_instance: Callable[..., AppInstance],
) -> None:
    """The same checker with network latency on Redis's replies (0-5 ms each, after the command has run on the
    server), as on a real network or a busy event loop."""
    s = instance_settings(settings, redis_url)
    lag_rng = random.Random(BASE_SEED)
    instances = []
    for name in ("app-a", "app-b"):
        backend = LaggyBackend(RedisBackend(redis_url, s), lambda op: lag_rng.uniform(0, 0.005))
        cache = Cache(s, backend)
        instances.append(make_instance(name, cache, s))
    verdict = await run_checker(
        "lease cache, 2 instances, late replies",
        instances,
        targets,
        database,
        lambda keys: cache_redis.delete(*keys),
        rounds=10,
        operations=200,
        tasks_per_instance=8,
    )
    assert sum(i.deferred_invalidations for i in instances) == 0, "an invalidation timed out on a healthy Redis"
    assert not verdict.future, verdict.future[:5]
    assert not verdict.stale, f"{len(verdict.stale)} stale reads, e.g. {verdict.stale[:5]}"


async def test_control_the_checker_finds_stale_reads_in_a_naive_cache(
    targets: list[tuple[int, int]],
    settings: Settings,
    redis_url: str,
    cache_redis: Redis,
    database: Database,
    make_instance: Callable[..., AppInstance],
) -> None:
    s = instance_settings(settings, redis_url)
    instances = [make_instance(name, NaiveCache(redis_url, PREFIX), s) for name in ("naive-a", "naive-b")]
    verdict = await run_checker(
        "naive cache-aside (control)",
        instances,
        targets,
        database,
        lambda keys: cache_redis.delete(*keys),
        rounds=10,
        operations=200,
        tasks_per_instance=8,
    )
    assert not verdict.future, verdict.future[:5]
    assert verdict.stale, "the checker found no stale read in a cache that has them: it cannot fail"


async def test_memory_backend_passes_the_checker(
    targets: list[tuple[int, int]], settings: Settings, database: Database, make_instance: Callable[..., AppInstance]
) -> None:
    s = instance_settings(settings, None)
    cache = Cache(s)
    assert isinstance(cache.backend, MemoryBackend)
    instance = make_instance("app-memory", cache, s)
    verdict = await run_checker(
        "memory backend, 1 instance",
        [instance],
        targets,
        database,
        lambda keys: cache.invalidate(*keys),
        rounds=10,
        operations=200,
        tasks_per_instance=16,
    )
    assert not verdict.future, verdict.future[:5]
    assert not verdict.stale, f"{len(verdict.stale)} stale reads, e.g. {verdict.stale[:5]}"


async def test_a_reader_that_starts_after_an_acknowledged_write_is_not_handed_an_older_cache_hit(
    settings: Settings, redis_url: str, cache_redis: Redis
) -> None:
    """Deterministic form of a race the late-replies checker can hit: reader A's lease read executes on Redis
    and sees v1, its reply is slow; a write of v2 commits and its DEL is acknowledged; reader B starts after
    that and finds A's load in flight in this process. B must not be handed v1."""
    s = instance_settings(settings, redis_url)
    lag = {"get_or_lease": 0.0}
    backend = LaggyBackend(RedisBackend(redis_url, s), lambda op: lag.get(op, 0.0))
    cache = Cache(s, backend)
    database = {"v": 1}

    async def load() -> dict[str, int]:
        return dict(database)

    key = cache.contact_key(1, 1)
    try:
        assert json.loads(await cache.read_through(Kind.contact, key, load, TTL) or b"")["v"] == 1  # fills v1
        lag["get_or_lease"] = 0.05
        backend._event("get_or_lease").clear()
        reader_a = asyncio.create_task(cache.read_through(Kind.contact, key, load, TTL))
        await backend.executed["get_or_lease"].wait()  # A's read has run on Redis: it saw v1
        database["v"] = 2  # the write commits...
        assert await cache.invalidate(key)  # ...and its invalidation is acknowledged
        lag["get_or_lease"] = 0.0
        b_started = time.perf_counter()
        value_b = json.loads(await cache.read_through(Kind.contact, key, load, TTL) or b"")["v"]
        value_a = json.loads(await reader_a or b"")["v"]
        print(
            f"\n[joined hit] reader A (started before the write) got v{value_a}; reader B (started after the"
            f" acknowledged write of v2) got v{value_b} after {1000 * (time.perf_counter() - b_started):.1f} ms"
        )
        assert value_b == 2, "a read that began after the write of v2 was acknowledged returned v1"
    finally:
        await cache.close()


async def test_a_fill_of_a_row_read_before_a_write_is_refused(
    settings: Settings, redis_url: str, cache_redis: Redis
) -> None:
    """A reader reads v1 from the database; before it fills, a write of v2 commits and invalidates. Its fill
    is refused (the lease was voided) and the next read gets v2."""
    s = instance_settings(settings, redis_url)
    cache = Cache(s)
    database = {"v": 1}
    calls = 0

    async def load() -> dict[str, int]:
        nonlocal calls
        calls += 1
        return dict(database)

    async def write_before_fill(key: str) -> None:
        cache.before_fill = None
        database["v"] = 2
        assert await cache.invalidate(key)

    key = cache.contact_key(1, 1)
    refused = counter("contacts_api_cache_fills_total", result="refused")
    try:
        cache.before_fill = write_before_fill
        first = json.loads(await cache.read_through(Kind.contact, key, load, TTL) or b"")
        assert first["v"] == 1  # began before the write: may return v1
        assert await cache_redis.get(key) is None, "the voided fill stored the old row"
        assert counter("contacts_api_cache_fills_total", result="refused") == refused + 1
        second = json.loads(await cache.read_through(Kind.contact, key, load, TTL) or b"")
        assert second["v"] == 2
        stored = await cache_redis.get(key)
        assert stored is not None
        assert json.loads(stored)["v"] == 2
        assert calls == 2
    finally:
        await cache.close()


# ----------------------------------------------------------------------------------------------------------------
# 2. The herd: many concurrent misses of one key cost one database query
# ----------------------------------------------------------------------------------------------------------------


class CountingLoader:
    def __init__(self, value: dict[str, Any], delay: float = 0.02) -> None:
        self.value = value
        self.delay = delay
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.value


async def test_herd_in_one_process_costs_one_load(settings: Settings, redis_url: str, cache_redis: Redis) -> None:
    cache = Cache(instance_settings(settings, redis_url))
    loader = CountingLoader({"id": 1, "first_name": "Herd"})
    key = cache.contact_key(1, 1)
    try:
        began = time.perf_counter()
        results = await asyncio.gather(*(cache.read_through(Kind.contact, key, loader, TTL) for _ in range(200)))
        elapsed = time.perf_counter() - began
        print(
            f"\n[herd, 1 instance] 200 concurrent misses -> {loader.calls} loader call(s), "
            f"{sum(r == dumps(loader.value) for r in results)} got the value, {1000 * elapsed:.0f} ms"
        )
        assert loader.calls == 1
        assert all(result == dumps(loader.value) for result in results)
        assert await cache_redis.get(key) == dumps(loader.value)
    finally:
        await cache.close()


async def test_herd_across_two_instances_costs_one_load(settings: Settings, redis_url: str, cache_redis: Redis) -> None:
    s = instance_settings(settings, redis_url)
    caches = [Cache(s), Cache(s)]
    loader = CountingLoader({"id": 2, "first_name": "Herd"})
    key = caches[0].contact_key(2, 1)
    try:
        began = time.perf_counter()
        results = await asyncio.gather(
            *(caches[i % 2].read_through(Kind.contact, key, loader, TTL) for i in range(200))
        )
        elapsed = time.perf_counter() - began
        print(
            f"\n[herd, 2 instances] 2 x 100 concurrent misses -> {loader.calls} loader call(s), "
            f"{sum(r == dumps(loader.value) for r in results)} got the value, {1000 * elapsed:.0f} ms"
        )
        assert loader.calls == 1
        assert all(result == dumps(loader.value) for result in results)
        assert await cache_redis.get(key) == dumps(loader.value)
    finally:
        for cache in caches:
            await cache.close()


async def test_herd_through_the_api_costs_one_contact_query(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    # The app's cache runs with an operation timeout of 1 s for this test: 200 requests in one event loop on a
    # 2-core machine delay the handling of each Redis reply by hundreds of ms (its own queue, not Redis), and a
    # call timed out that way, or a lease wait run out, sends its request to the database.
    await global_cache.close()
    global_cache.configure(settings.model_copy(update={"cache_op_timeout": 1.0}))
    try:
        user = await make_user(db, settings)
        contact = await make_contact(db, user, first_name="Herd")
        headers = auth_headers(settings, user)
        assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 200  # the user is cached
        results = ("hit", "miss", "error", "bypass")
        before = {r: counter("contacts_api_cache_requests_total", kind="contact", result=r) for r in results}
        queries_before = query_counter.value
        began = time.perf_counter()
        responses = await asyncio.gather(
            *(client.get(f"/api/v1/contacts/{contact.id}", headers=headers) for _ in range(200))
        )
        elapsed = time.perf_counter() - began
        queries = query_counter.value - queries_before
        lookups = {
            r: counter("contacts_api_cache_requests_total", kind="contact", result=r) - before[r] for r in results
        }
        statuses = {r.status_code for r in responses}
        bodies = {r.content for r in responses}
        print(
            f"\n[herd, HTTP] 200 concurrent GET /contacts/{contact.id} -> {queries} SQL statement(s), "
            f"statuses {sorted(statuses)}, {len(bodies)} distinct body, contact look-ups "
            f"{ {r: int(n) for r, n in lookups.items()} }, {1000 * elapsed:.0f} ms"
        )
        assert statuses == {200}
        assert len(bodies) == 1
        assert json.loads(bodies.pop())["first_name"] == "Herd"
        assert queries == 1
    finally:
        await global_cache.close()
        global_cache.configure(settings)
