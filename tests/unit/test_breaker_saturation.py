"""The operation deadline and the breaker tell a saturated worker from a failing Redis: a timeout while Redis keeps
answering (the worker's own queue is long) is not a failure; a Redis that answers nothing still fails on time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from app.core.cache import CacheUnavailable
from app.core.cache.deadline import Deadline
from app.core.cache.guard import GuardedBackend
from tests.conftest import make_settings

TIMEOUT = 0.05
CAP = 1.0


class Replies:
    """A count of Redis's replies, as the Redis backend keeps one."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


async def run_under_deadline(work: Any, timeout: float, answers: Replies | None) -> float:
    """Seconds `work` ran before it finished or its deadline expired (TimeoutError)."""
    began = time.perf_counter()
    async with asyncio.timeout(None) as window:
        deadline = Deadline(window, timeout, CAP, answers)
        try:
            await work
        finally:
            deadline.cancel()
    return time.perf_counter() - began


async def keep_answering(replies: Replies, every: float = 0.005) -> None:
    while True:
        await asyncio.sleep(every)
        replies.count += 1


async def test_an_operation_waiting_while_redis_answers_others_is_not_expired() -> None:
    replies = Replies()
    answering = asyncio.create_task(keep_answering(replies))
    try:
        took = await run_under_deadline(asyncio.sleep(4 * TIMEOUT), TIMEOUT, replies)
    finally:
        answering.cancel()
    assert took >= 4 * TIMEOUT


async def test_an_operation_expires_when_redis_answers_nobody() -> None:
    with pytest.raises(TimeoutError):
        await run_under_deadline(asyncio.sleep(CAP), TIMEOUT, Replies())


async def test_answers_extend_an_operation_only_up_to_the_cap() -> None:
    replies = Replies()
    answering = asyncio.create_task(keep_answering(replies))
    began = time.perf_counter()
    try:
        with pytest.raises(TimeoutError):
            await run_under_deadline(asyncio.sleep(10 * CAP), TIMEOUT, replies)
    finally:
        answering.cancel()
    assert CAP <= time.perf_counter() - began < 5 * CAP


class QueuedRedis:
    """A backend whose server answers promptly, one operation after another (each in `service` seconds), and
    counts its replies like the Redis backend: a worker with many operations in flight waits in its own queue,
    longer than the operation timeout, while the server never stops answering."""

    name = "queued"

    def __init__(self, service: float) -> None:
        self.service = service
        self.answers = Replies()
        self._turn = asyncio.Lock()

    async def get(self, keys: list[tuple[str, str | None]]) -> list[bytes | None]:
        async with self._turn:
            await asyncio.sleep(self.service)
            self.answers.count += 1
        return [b"{}" for _ in keys]


class SilentRedis:
    """A backend whose server takes the operations and never answers (a stopped Redis)."""

    name = "silent"

    def __init__(self) -> None:
        self.answers = Replies()

    async def get(self, keys: list[tuple[str, str | None]]) -> list[bytes | None]:
        await asyncio.sleep(3600)
        return []


def guarded(backend: Any) -> GuardedBackend:
    guard = GuardedBackend()
    guard.configure(make_settings(cache_op_timeout=TIMEOUT, cache_op_timeout_cap=CAP), backend, None)
    return guard


async def test_a_long_queue_in_a_busy_worker_neither_fails_operations_nor_opens_the_breaker() -> None:
    """40 operations in flight behind one another, 4 ms each: the last ones wait about three operation timeouts
    while the server answers all along. Before the deadline counted the replies, about half of them timed out,
    the breaker opened and the worker distrusted the cache for CACHE_RECOVERY_GRACE."""
    backend = QueuedRedis(service=0.004)
    guard = guarded(backend)
    results = await asyncio.gather(*(guard.call(backend.get([("k", None)])) for _ in range(40)), return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert not guard.breaker.is_open
    assert guard.breaker.failures == 0
    assert guard.trusted()


async def test_a_silent_redis_still_opens_the_breaker_after_three_operation_timeouts() -> None:
    backend = SilentRedis()
    guard = guarded(backend)
    began = time.perf_counter()
    results = await asyncio.gather(*(guard.call(backend.get([("k", None)])) for _ in range(3)), return_exceptions=True)
    took = time.perf_counter() - began
    assert all(isinstance(r, CacheUnavailable) for r in results)
    assert guard.breaker.is_open
    assert took < CAP / 2  # failed on the operation timeout, not at the cap
