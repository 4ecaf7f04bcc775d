"""Invalidation: tombstones before a write's commit, deletions after it, and deletions retried until they land."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.core.cache.backend import CacheUnavailable
from app.core.cache.guard import GuardedBackend
from app.core.cache.metrics import CACHE_INVALIDATIONS
from app.core.errors import ServiceUnavailable

logger = logging.getLogger(__package__)


class CacheWriteRefused(ServiceUnavailable):
    """The cache could not be invalidated before the commit, so the change was not made; try again shortly."""

    code = "CacheWriteRefused"


class Invalidations:
    """The deletions this process owes the backend. A key whose deletion failed stays pending: reads of it bypass
    the cache (see `Engine.usable`) and a background task retries the deletion until it lands."""

    def __init__(self, guard: GuardedBackend) -> None:
        self._guard = guard
        self._pending: set[str] = set()
        self._retry_task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        """Forget what is pending (the cache was bound to other settings; a running retry task then ends)."""
        self._pending.clear()

    @property
    def pending(self) -> frozenset[str]:
        return frozenset(self._pending)

    def any_pending(self, keys: tuple[str, ...]) -> bool:
        return bool(self._pending) and any(key in self._pending for key in keys)

    async def delete(self, keys: list[str]) -> bool:
        """Delete `keys` (voiding any lease or tombstone on them). On failure the keys stay pending and the
        deletion is retried in the background until it succeeds."""
        if not keys:
            return True
        try:
            await self._guard.call(self._guard.backend.delete(keys), patient=True)
        except CacheUnavailable:
            CACHE_INVALIDATIONS.labels("deferred").inc()
            self._pending.update(keys)
            self._start_retrying()
            return False
        CACHE_INVALIDATIONS.labels("done").inc()
        self._pending.difference_update(keys)
        return True

    async def tombstone(self, keys: list[tuple[str, bool]], confirm_ms: int = 0) -> bool:
        """Put tombstones in the place of `keys` (key, is a hash): until the deletion after the commit, no reader
        in any process is served these keys or fills them. False if the backend did not answer (or no replica
        confirmed them within `confirm_ms`, where a failover could promote one)."""
        guard = self._guard
        if not guard.enabled or not keys:
            return True
        ttl_ms = int(guard.settings.cache_tombstone_ttl * 1000)
        try:
            await guard.call(guard.backend.tombstone(keys, ttl_ms, confirm_ms), patient=True)
        except CacheUnavailable as exc:
            CACHE_INVALIDATIONS.labels("tombstone_failed").inc()
            logger.debug("cache: tombstones not placed: %s", exc)
            return False
        return True

    def resume_retries(self) -> None:
        """The backend answered: if deletions are pending, make sure a task is retrying them."""
        if self._pending:
            self._start_retrying()

    def _start_retrying(self) -> None:
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(self._retry_pending())

    async def _retry_pending(self) -> None:
        delay = 0.05
        while self._pending:
            await asyncio.sleep(delay)
            batch = list(self._pending)
            try:
                await self._guard.call(self._guard.backend.delete(batch))
            except CacheUnavailable:
                delay = min(delay * 2, 0.25)
                continue
            except Exception:
                logger.exception("cache: retrying invalidations failed")
                delay = min(delay * 2, 0.25)
                continue
            self._pending.difference_update(batch)
            CACHE_INVALIDATIONS.labels("retried").inc(len(batch))

    async def close(self) -> None:
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._retry_task
            self._retry_task = None
