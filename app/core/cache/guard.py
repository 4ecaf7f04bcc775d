"""The configured backend as the cache calls it: one round trip under the breaker and a timeout; when to trust it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.core.breaker import CircuitBreaker
from app.core.cache.backend import Backend, CacheNotConfigured, CacheUnavailable, CircuitOpen
from app.core.cache.deadline import Deadline
from app.core.cache.metrics import REDIS_ROUNDTRIPS
from app.core.config import Settings

logger = logging.getLogger(__package__)

NOT_CONFIGURED = "the cache is not configured: call configure(settings) first (the app's lifespan and the CLI do)"


class GuardedBackend:
    """Settings, backend and circuit breaker of one cache, and the state of its outage and recovery."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._backend: Backend | None = None
        self._breaker: CircuitBreaker | None = None
        self.off_reason: str | None = None  # why the cache is off (see Settings.cache_off_reason), if it is
        # Called after every answer from the backend (the invalidations' retries start again).
        self.on_answer: Callable[[], None] | None = None
        # After an outage this process saw, another process may still owe Redis an invalidation: read
        # nothing from the cache until then (see `call`).
        self._failed_since_success = False
        self._distrust_until = 0.0
        self._in_flight = 0  # operations of this process under way
        self._answers: Callable[[], int] | None = None

    def configure(self, settings: Settings, backend: Backend, off_reason: str | None) -> None:
        self._settings = settings
        self._backend = backend
        self.off_reason = off_reason
        self._breaker = CircuitBreaker(settings.cache_breaker_threshold, settings.cache_breaker_cooldown)
        self._failed_since_success = False
        self._distrust_until = 0.0
        # The backend's count of Redis's replies, if it keeps one: a timeout while Redis answers is the load's.
        self._answers = getattr(backend, "answers", None)

    @property
    def configured(self) -> bool:
        return self._settings is not None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise CacheNotConfigured(NOT_CONFIGURED)
        return self._settings

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise CacheNotConfigured(NOT_CONFIGURED)
        return self._backend

    @property
    def breaker(self) -> CircuitBreaker:
        if self._breaker is None:
            raise CacheNotConfigured(NOT_CONFIGURED)
        return self._breaker

    @property
    def enabled(self) -> bool:
        return self.settings.cache_enabled and self.off_reason is None

    def trusted(self) -> bool:
        """False during the grace period after an outage this process saw (see `call`)."""
        return not (self._distrust_until and time.monotonic() < self._distrust_until)

    async def call(self, operation: Awaitable[Any], *, patient: bool = False) -> Any:
        """Run one backend round trip under the breaker and the operation timeout; CacheUnavailable on failure."""
        breaker = self.breaker
        if not breaker.allow():
            if asyncio.iscoroutine(operation):
                operation.close()
            raise CircuitOpen("circuit open")
        REDIS_ROUNDTRIPS.inc()
        settings = self.settings
        # Operations under way share the worker's CPU: with 200 requests in flight each one's reply is parsed
        # a 200th as fast, so each gets CACHE_OP_TIMEOUT_PER_CALL more per operation under way (up to the cap).
        timeout = min(
            settings.cache_op_timeout + self._in_flight * settings.cache_op_timeout_per_call,
            settings.cache_op_timeout_cap,
        )
        if patient:
            # A write's tombstone or deletion: worth up to the cap, because one that fails while other workers
            # keep reading Redis leaves them the old value until its retry lands. A read is better served by the
            # database than by waiting.
            timeout = settings.cache_op_timeout_cap
        self._in_flight += 1
        try:
            async with asyncio.timeout(None) as window:
                deadline = Deadline(window, timeout, settings.cache_op_timeout_cap, self._answers)
                try:
                    result = await operation
                finally:
                    deadline.cancel()
                    self._in_flight -= 1
        except CacheUnavailable:
            # The backend answered, but not as the operation needs (no replica confirmed a tombstone in time).
            breaker.record_success()
            raise
        except (OSError, TimeoutError, RedisConnectionError, RedisTimeoutError) as exc:
            breaker.record_failure()
            self._failed_since_success = True
            raise CacheUnavailable(str(exc)) from exc
        except RedisError as exc:
            # The server answered (e.g. WRONGTYPE on a key written by hand): not an outage, but no cache either.
            breaker.record_success()
            logger.warning("cache: Redis refused an operation: %s", exc)
            raise CacheUnavailable(str(exc)) from exc
        except Exception as exc:
            # The client library's own failure, e.g. uvloop's "handler is closed" when redis-py writes to a
            # connection that another task closed while a cluster node failed: an outage, never a 500.
            breaker.record_failure()
            self._failed_since_success = True
            logger.warning("cache: the Redis client failed: %r", exc)
            raise CacheUnavailable(repr(exc)) from exc
        except BaseException:
            breaker.abandon_probe()
            raise
        breaker.record_success()
        if self._failed_since_success:
            # Redis answers again. Invalidations that other processes could not deliver during the outage
            # are being retried now (within about a breaker cooldown): until they land, serve from the database.
            self._failed_since_success = False
            self._distrust_until = time.monotonic() + settings.cache_recovery_grace
        if self.on_answer is not None:
            self.on_answer()
        return result
