"""The cache when Redis fails: killed, paused, unreachable, slow (SIGSTOP); lost invalidations; leases left behind;
no client retries.

Each test runs a Redis server of its own (tests.servers.RedisProcess) that it kills, freezes (SIGSTOP/SIGCONT),
pauses (CLIENT PAUSE) or restarts on the same port, with `cache_op_timeout` = 0.05 s as in production. The
"database" here is a loader that counts its calls: what the cache could not serve, the loader served.

Run with `-s` to see the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.core.cache import REDIS_ROUNDTRIPS, Cache, Kind, LeaseState, RedisBackend, dumps
from app.core.config import Settings
from tests.cache_helpers import counter
from tests.conftest import MakeCache, make_settings
from tests.servers import RedisProcess, free_port

OP_TIMEOUT = 0.05
# One guarded call may wait 2 x the operation timeout (the cache's own asyncio.timeout); plus scheduling slack.
LATENCY_BOUND = OP_TIMEOUT * 2 + 0.1
FAST_PATH_BOUND = 0.005  # a call that the open breaker answers without asking Redis
RECOVERY_DEADLINE = 5.0
TTL = 60


def fault_settings(url: str, **overrides: Any) -> Settings:
    return make_settings(redis_url=url, cache_op_timeout=OP_TIMEOUT, **overrides)


class Source:
    """Stands for the database: the current value of each key, and how many reads it served."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.calls = 0

    def loader(self, key: str) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def load() -> dict[str, Any]:
            self.calls += 1
            return {"key": key, "v": self.values.get(key, 1)}

        return load

    def expected(self, key: str) -> bytes:
        return dumps({"key": key, "v": self.values.get(key, 1)})


class LoopLag:
    """The longest delay, while the block runs, with which the event loop ran a 1 ms timer: the scheduling delay
    (many tasks, a shared machine) that every wall-clock latency measured in the block includes as well."""

    def __init__(self) -> None:
        self.max = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        while True:
            began = time.perf_counter()
            await asyncio.sleep(0.001)
            self.max = max(self.max, time.perf_counter() - began - 0.001)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._probe())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def timed_read(cache: Cache, source: Source, key: str) -> tuple[bytes | None, float]:
    began = time.perf_counter()
    raw = await cache.read_through(Kind.contact, key, source.loader(key), TTL)
    return raw, time.perf_counter() - began


async def is_cached(cache: Cache, source: Source, key: str) -> bool:
    """Read `key` twice; True when the second read was served without the loader (a cache hit)."""
    await cache.read_through(Kind.contact, key, source.loader(key), TTL)
    calls = source.calls
    raw = await cache.read_through(Kind.contact, key, source.loader(key), TTL)
    return source.calls == calls and raw == source.expected(key)


async def wait_until_cached(cache: Cache, source: Source, key: str) -> float:
    """Seconds until reads of `key` are cache hits again; fails after RECOVERY_DEADLINE."""
    began = time.perf_counter()
    while time.perf_counter() - began < RECOVERY_DEADLINE:
        if await is_cached(cache, source, key):
            return time.perf_counter() - began
        await asyncio.sleep(0.05)
    raise AssertionError(f"caching did not resume within {RECOVERY_DEADLINE} s (breaker open: {cache.breaker.is_open})")


async def wait_until_nothing_pending(cache: Cache) -> None:
    """Poll (the cache has no event for it) until no invalidation is pending, for up to RECOVERY_DEADLINE."""
    for _ in range(int(RECOVERY_DEADLINE / 0.02)):
        if not cache.pending_invalidations:
            return
        await asyncio.sleep(0.02)


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def cache_at(make_cache: MakeCache) -> Callable[[str], Cache]:
    """Builds a cache on the Redis at a URL, with the production operation timeout."""
    return lambda url: make_cache(fault_settings(url))


# ----------------------------------------------------------------------------------------------------------------
# 3. An invalidation that cannot reach Redis is not lost
# ----------------------------------------------------------------------------------------------------------------


async def test_an_invalidation_that_cannot_reach_redis_is_kept_bypassed_and_retried(
    redis_process: RedisProcess, cache_at: Callable[[str], Cache]
) -> None:
    cache = cache_at(redis_process.url)
    observer = Redis.from_url(redis_process.url)
    source = Source()
    key = cache.contact_key(1, 1)
    try:
        source.values[key] = 1
        assert await is_cached(cache, source, key)  # v1 is in Redis
        assert await observer.get(key) == source.expected(key)

        redis_process.stop_signal(signal.SIGSTOP)  # Redis freezes: the DEL will time out
        source.values[key] = 2  # a write commits v2...
        retried = counter("contacts_api_cache_invalidations_total", result="retried")
        began = time.perf_counter()
        invalidated = await cache.invalidate(key)  # ...and its invalidation fails
        invalidate_took = time.perf_counter() - began
        assert invalidated is False
        assert key in cache.pending_invalidations

        # While it is pending, reads of the key bypass the cache: the database serves v2.
        calls = source.calls
        bypass_latencies = []
        for _ in range(5):
            raw, took = await timed_read(cache, source, key)
            assert raw == source.expected(key)
            bypass_latencies.append(took)
        assert source.calls == calls + 5
        await asyncio.sleep(0.5)  # retries keep failing while Redis is frozen
        assert key in cache.pending_invalidations

        redis_process.stop_signal(signal.SIGCONT)
        resumed = time.perf_counter()
        raw, _ = await timed_read(cache, source, key)  # Redis still holds v1 until the retry runs
        assert raw == source.expected(key)
        await wait_until_nothing_pending(cache)
        cleared_after = time.perf_counter() - resumed
        assert not cache.pending_invalidations, f"still pending {RECOVERY_DEADLINE} s after Redis came back"
        assert counter("contacts_api_cache_invalidations_total", result="retried") >= retried + 1
        assert await observer.get(key) is None, "the old value survived the retried invalidation"

        # Caching resumes (after the recovery grace, during which other processes' retries land): a miss fills
        # v2, the next read is a hit.
        hits = counter("contacts_api_cache_requests_total", kind="contact", result="hit")
        await wait_until_cached(cache, source, key)
        assert counter("contacts_api_cache_requests_total", kind="contact", result="hit") >= hits + 1
        assert await observer.get(key) == source.expected(key)
        print(
            f"\n[lost invalidation] invalidate() with Redis frozen -> False in {1000 * invalidate_took:.0f} ms, "
            f"key pending; 5 reads bypassed the cache (max {1000 * max(bypass_latencies):.1f} ms, served v2); "
            f"after SIGCONT the retry deleted the key and pending emptied in {cleared_after:.2f} s; caching resumed"
        )
    finally:
        redis_process.stop_signal(signal.SIGCONT)
        await observer.aclose()


# ----------------------------------------------------------------------------------------------------------------
# 4. Reads survive Redis being killed, paused, unreachable or frozen; the breaker; recovery
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["killed", "paused", "unreachable", "slow"])
async def test_reads_survive_a_redis_outage_and_caching_resumes(fault: str, cache_at: Callable[[str], Cache]) -> None:
    server: RedisProcess | None = None
    admin: Redis | None = None
    if fault == "unreachable":
        port = free_port()  # nothing listens there
        url = f"redis://127.0.0.1:{port}/0"
    else:
        server = RedisProcess().start()
        port = server.port
        url = server.url
    try:
        cache = cache_at(url)
        source = Source()
        keys = [cache.contact_key(i, 1) for i in range(10)]
        if server is not None:
            for key in keys:
                assert await is_cached(cache, source, key)  # warm: values cached, connections in the pool

        # The fault.
        if fault == "killed":
            assert server is not None
            server.kill()
        elif fault == "paused":
            admin = Redis.from_url(url)
            await admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")  # type: ignore[no-untyped-call]
        elif fault == "slow":  # SIGSTOP for a moment
            assert server is not None
            server.stop_signal(signal.SIGSTOP)

        # 50 concurrent reads of 10 keys: all answered (by the loader), none slower than the bound.
        calls = source.calls
        async with LoopLag() as lag:
            results = await asyncio.gather(*(timed_read(cache, source, keys[i % 10]) for i in range(50)))
        latencies = [took for _, took in results]
        assert all(raw == source.expected(keys[i % 10]) for i, (raw, _) in enumerate(results))
        assert source.calls > calls, "reads were not served by the loader"
        # One operation timeout at most (two would be >= 0.2 s), plus what the event loop itself lagged.
        assert max(latencies) <= LATENCY_BOUND + lag.max, f"a read took {max(latencies):.3f} s"
        assert cache.breaker.is_open, "the breaker did not open"

        # With the breaker open, calls do not pay the timeout: Redis is not even asked.
        roundtrips = REDIS_ROUNDTRIPS._value.get()
        open_latencies = []
        for i in range(20):
            raw, took = await timed_read(cache, source, keys[i % 10])
            assert raw == source.expected(keys[i % 10])
            open_latencies.append(took)
        began = time.perf_counter()
        assert await cache.invalidate(keys[0]) is False  # a write during the outage: deferred, not lost
        invalidate_took = time.perf_counter() - began
        assert keys[0] in cache.pending_invalidations
        assert REDIS_ROUNDTRIPS._value.get() == roundtrips, "Redis was called with the breaker open"
        # Wall-clock figures on a shared 2-core machine: allow the odd scheduling hiccup, not a paid timeout.
        assert statistics.median(open_latencies) < FAST_PATH_BOUND
        assert sum(took < FAST_PATH_BOUND for took in open_latencies) >= 18, open_latencies
        assert max(open_latencies) < OP_TIMEOUT
        assert invalidate_took < OP_TIMEOUT

        # Redis returns.
        if fault == "killed":
            assert server is not None
            server.start()  # same port, empty
        elif fault == "paused":
            assert admin is not None
            await admin.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
        elif fault == "slow":  # SIGSTOP for a moment
            assert server is not None
            server.stop_signal(signal.SIGCONT)
        else:
            server = RedisProcess(port=port).start()
        hits = counter("contacts_api_cache_requests_total", kind="contact", result="hit")
        recovery = await wait_until_cached(cache, source, keys[1])
        assert counter("contacts_api_cache_requests_total", kind="contact", result="hit") >= hits + 1
        assert not cache.breaker.is_open
        await wait_until_nothing_pending(cache)
        assert not cache.pending_invalidations
        assert await is_cached(cache, source, keys[0])
        print(
            f"\n[outage: {fault}] 50 concurrent reads all served, max latency {1000 * max(latencies):.0f} ms "
            f"(bound {1000 * LATENCY_BOUND:.0f} ms + event-loop lag {1000 * lag.max:.0f} ms); breaker open; "
            f"with it open 20 reads: median "
            f"{1000 * statistics.median(open_latencies):.2f} ms, max {1000 * max(open_latencies):.2f} ms, no Redis "
            f"round trip; invalidate {1000 * invalidate_took:.2f} ms (deferred); "
            f"caching resumed {recovery:.2f} s after Redis returned"
        )
    finally:
        if admin is not None:
            await admin.aclose()
        if server is not None:
            server.close()


# ----------------------------------------------------------------------------------------------------------------
# 5. redis-py does not retry with backoff
# ----------------------------------------------------------------------------------------------------------------


async def test_a_call_to_a_killed_redis_returns_within_the_operation_timeout(
    redis_process: RedisProcess, cache_at: Callable[[str], Cache]
) -> None:
    cache = cache_at(redis_process.url)
    source = Source()
    key = cache.contact_key(1, 1)
    assert await is_cached(cache, source, key)
    redis_process.kill()
    raw, took = await timed_read(cache, source, key)
    assert raw == source.expected(key)
    # The backend on its own (no asyncio.timeout around it): one attempt, no retries.
    backend = cache.backend
    began = time.perf_counter()
    with pytest.raises((RedisConnectionError, OSError)):
        await backend.get([(key, None)])
    raw_took = time.perf_counter() - began
    print(
        f"\n[no retries, killed] a read returned in {1000 * took:.1f} ms; the backend's GET failed in "
        f"{1000 * raw_took:.1f} ms"
    )
    assert took < OP_TIMEOUT * 2
    assert raw_took < OP_TIMEOUT


async def test_redis_py_makes_one_attempt_against_a_server_that_never_answers(
    cache_at: Callable[[str], Cache],
) -> None:
    """A server that accepts connections and never replies: the backend's call times out after the socket
    timeout, having opened exactly one connection (redis-py's default would retry 3 times with backoff)."""
    connections = 0
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cache = cache_at(f"redis://127.0.0.1:{port}/0")
        backend = cache.backend
        assert isinstance(backend, RedisBackend)
        began = time.perf_counter()
        with pytest.raises((RedisTimeoutError, RedisConnectionError, TimeoutError)):
            await backend.get([("k", None)])
        raw_took = time.perf_counter() - began
        raw_connections = connections
        source = Source()
        raw, took = await timed_read(cache, source, cache.contact_key(1, 1))
        assert raw == source.expected(cache.contact_key(1, 1))
        print(
            f"\n[no retries, silent server] backend GET gave up after {1000 * raw_took:.0f} ms with "
            f"{raw_connections} connection(s) opened; a read through the cache returned in {1000 * took:.0f} ms"
        )
        assert raw_connections == 1
        # redis-py's own socket timeout is only the backstop (the cap); the cache's deadline is the operation's.
        assert raw_took < cache.settings.cache_op_timeout_cap + 0.1
        assert took < LATENCY_BOUND
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_busy_event_loop_does_not_fail_healthy_redis_operations(
    redis_process: RedisProcess, cache_at: Callable[[str], Cache]
) -> None:
    """200 reads in flight, then the loop blocked for 3 x the operation timeout (a saturated worker: other
    requests' parsing and token checks), at each stage of the reads' progress (after 1 to 8 loop iterations).
    Redis answered in time; the replies only waited in their sockets. Every read is a hit, no operation fails
    and the breaker stays closed."""
    cache = cache_at(redis_process.url)
    source = Source()
    key = cache.contact_key(1, 1)
    assert await is_cached(cache, source, key)
    errors = counter("contacts_api_cache_requests_total", kind="contact", result="error")
    calls = source.calls

    results = []
    for iterations in range(1, 9):
        read = source.loader(key)
        reads = [asyncio.create_task(cache.read_through(Kind.contact, key, read, TTL)) for _ in range(200)]
        for _ in range(iterations):
            await asyncio.sleep(0)
        time.sleep(OP_TIMEOUT * 3)  # noqa: ASYNC251 - blocking the loop is the point
        results += await asyncio.gather(*reads)

    assert results == [source.expected(key)] * 1600
    assert source.calls == calls
    assert counter("contacts_api_cache_requests_total", kind="contact", result="error") == errors
    assert not cache.breaker.is_open


async def test_a_silent_redis_still_fails_after_the_operation_timeout_on_an_idle_loop(
    cache_at: Callable[[str], Cache],
) -> None:
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cache = cache_at(f"redis://127.0.0.1:{port}/0")
        source = Source()
        async with LoopLag() as lag:
            raw, took = await timed_read(cache, source, cache.contact_key(1, 1))
        print(f"\n[silent server, idle loop] read answered from the source in {1000 * took:.0f} ms")
        assert raw == source.expected(cache.contact_key(1, 1))
        assert took < OP_TIMEOUT + 0.05 + lag.max
    finally:
        server.close()
        await server.wait_closed()


# ----------------------------------------------------------------------------------------------------------------
# A lease left behind
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["cancelled", "crashed"])
async def test_a_lease_left_behind_neither_stalls_nor_herds_readers(
    how: str, redis_process: RedisProcess, cache_at: Callable[[str], Cache]
) -> None:
    """A reader takes the lease and never fills: its request is cancelled (client gone) while it reads the
    database, or its process dies. The lease stays in Redis for `cache_lease_ttl` (2 s). Readers of the key in
    another instance should wait for a fill at most `cache_lease_wait` (README: "seconds a reader waits for
    another process's fill") and then be served by the database, their process's single flight still making one
    query for all of them."""
    instance_a = cache_at(redis_process.url)
    instance_b = cache_at(redis_process.url)
    settings = instance_b.settings
    key = instance_a.contact_key(1, 1)
    source = Source()

    if how == "cancelled":

        async def never_returns() -> dict[str, Any]:
            await asyncio.sleep(30)
            return {}

        leader = asyncio.create_task(instance_a.read_through(Kind.contact, key, never_returns, TTL))
        await asyncio.sleep(0.05)  # it holds the lease and is reading the database...
        leader.cancel()  # ...when its request is cancelled
        with pytest.raises(asyncio.CancelledError):
            await leader
    else:
        lease_ms = int(settings.cache_lease_ttl * 1000)
        state, _ = await instance_a.backend.get_or_lease(key, None, "dead-process", lease_ms, TTL)
        assert state is LeaseState.granted

    async with LoopLag() as lag:
        results = await asyncio.gather(*(timed_read(instance_b, source, key) for _ in range(100)))
    latencies = sorted(took for _, took in results)
    print(
        f"\n[lease left behind: {how}] 100 concurrent reads in another instance: {source.calls} loader call(s), "
        f"median {1000 * latencies[50]:.0f} ms, max {1000 * latencies[-1]:.0f} ms "
        f"(cache_lease_wait {1000 * settings.cache_lease_wait:.0f} ms, cache_lease_ttl {settings.cache_lease_ttl} s,"
        f" event-loop lag {1000 * lag.max:.0f} ms)"
    )
    assert all(raw == source.expected(key) for raw, _ in results)
    assert latencies[-1] <= settings.cache_lease_wait + 0.2 + lag.max, "readers waited past cache_lease_wait"
    assert source.calls == 1, "the readers went to the database one by one"
