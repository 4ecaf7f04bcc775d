"""A saturated worker is not a failing Redis: CPU-bound work hogging the event loop while Redis answers promptly
opens no breaker and sends no read to the database; a stopped Redis (SIGSTOP) still opens the breaker after three
operation timeouts, on an idle loop and on a busy one.

Each test runs a Redis server of its own (tests.servers.RedisProcess), with the production operation timeout
(50 ms). The "database" is a loader that counts its calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from app.core.cache import Cache, Kind
from tests.cache_helpers import counter, roundtrips
from tests.conftest import MakeCache, make_settings
from tests.integration.test_cache_faults import TTL, Source, is_cached
from tests.servers import RedisProcess

OP_TIMEOUT = 0.05
CAP = 1.0
SLICE = 0.003  # CPU work per loop iteration: below the deadline's lateness slack (5 ms), so no timer fires late
READS = 40


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def cache_at(make_cache: MakeCache) -> Callable[..., Cache]:
    def build(url: str, **overrides: Any) -> Cache:
        settings = make_settings(
            redis_url=url, cache_op_timeout=OP_TIMEOUT, cache_op_timeout_cap=CAP, cache_recovery_grace=2.5, **overrides
        )
        return make_cache(settings)

    return build


@contextlib.asynccontextmanager
async def saturated_loop() -> AsyncIterator[None]:
    """The event loop kept busy: every iteration, SLICE seconds of CPU-bound work (other requests' parsing and
    token checks) before anything else runs."""

    async def hog() -> None:
        while True:
            until = time.perf_counter() + SLICE
            while time.perf_counter() < until:
                pass
            await asyncio.sleep(0)

    task = asyncio.create_task(hog())
    await asyncio.sleep(0)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def lookups(result: str) -> float:
    return counter("contacts_api_cache_requests_total", kind="contact", result=result)


async def timed(coroutine: Any) -> tuple[Any, float]:
    began = time.perf_counter()
    result = await coroutine
    return result, time.perf_counter() - began


async def test_a_saturated_loop_with_redis_answering_neither_bypasses_nor_opens_the_breaker(
    redis_process: RedisProcess, cache_at: Callable[..., Cache]
) -> None:
    """40 warm reads at once on a worker whose loop is hogged by CPU work, its two Redis connections shared:
    Redis answers each command at once, but the last reads wait several operation timeouts for a connection and
    for the loop. Before the deadline counted Redis's replies, about half of them timed out, the breaker opened
    and the worker then read nothing from the cache for CACHE_RECOVERY_GRACE: every read a database read."""
    cache = cache_at(redis_process.url, cache_pool_size=2)
    source = Source()
    keys = [cache.contact_key(n, 1) for n in range(READS)]
    for key in keys:
        assert await is_cached(cache, source, key)
    calls, bypassed, failed = source.calls, lookups("bypass"), lookups("error")

    async with saturated_loop():
        results = await asyncio.gather(
            *(timed(cache.read_through(Kind.contact, key, source.loader(key), TTL)) for key in keys)
        )
    print(f"\n[saturated loop] slowest warm read {1000 * max(took for _, took in results):.0f} ms")

    assert [raw for raw, _ in results] == [source.expected(key) for key in keys]
    assert source.calls == calls  # not one read reached the database
    assert (lookups("bypass"), lookups("error")) == (bypassed, failed)
    assert not cache.breaker.is_open
    assert cache.breaker.failures == 0
    assert await is_cached(cache, source, keys[0])  # and no distrust afterwards


@pytest.mark.parametrize("loop", ["idle", "saturated"])
async def test_a_stopped_redis_still_opens_the_breaker_after_three_timeouts(
    loop: str, redis_process: RedisProcess, cache_at: Callable[..., Cache]
) -> None:
    """SIGSTOP: the connections stay open and nothing answers. Three reads fail and open the breaker; the next
    read does not ask Redis. All reads answered from the database. No reply came to suggest that Redis was only
    slow, so on an idle loop they failed on the operation timeout (about 50 ms), far from the 1 s cap (on a busy
    loop a timer that fires late also gives a call more time, as before)."""
    cache = cache_at(redis_process.url)
    source = Source()
    keys = [cache.contact_key(n, 1) for n in range(4)]
    for key in keys:
        assert await is_cached(cache, source, key)
    calls = source.calls

    answers = cache.backend.answers  # type: ignore[attr-defined]
    redis_process.stop_signal(signal.SIGSTOP)
    replies = answers()
    try:
        async with saturated_loop() if loop == "saturated" else contextlib.nullcontext():
            failed = [await timed(cache.read_through(Kind.contact, k, source.loader(k), TTL)) for k in keys[:3]]
            opened, asked = cache.breaker.is_open, roundtrips()
            await cache.read_through(Kind.contact, keys[3], source.loader(keys[3]), TTL)
            skipped = roundtrips() == asked
        silent = answers() == replies
    finally:
        redis_process.stop_signal(signal.SIGCONT)
    print(f"\n[stopped redis, {loop} loop] reads failed in {[round(1000 * took) for _, took in failed]} ms")

    assert [raw for raw, _ in failed] == [source.expected(key) for key in keys[:3]]
    assert source.calls == calls + 4
    assert opened
    assert skipped  # the open breaker answers without asking Redis
    assert silent  # no reply while stopped: nothing gave its calls more time but the loop's own lag
    if loop == "idle":
        assert all(took < CAP / 2 for _, took in failed)  # the operation timeout (about 50 ms), far from the cap
