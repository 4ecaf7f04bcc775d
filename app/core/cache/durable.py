"""Invalidations that outlive the worker that owes them: recorded in the write's own transaction, replayed by any.

A write whose tombstones could not be placed (Redis unreachable from its worker, the breaker open, no replica
confirming them) commits anyway under CACHE_WRITE_POLICY=available. Its deletion after the commit may fail too,
and the worker then keeps it in memory and retries it: if that worker dies first, every other worker and host
serves the old value until the key's TTL (an hour for a user: their old role). So such a write also inserts a row
naming its keys into `cache_invalidations`, in its own transaction: the row exists exactly when the write
committed. Every worker replays the table every CACHE_REPLAY_INTERVAL: it deletes the keys in Redis, then the rows.
Deleting a key is always safe (a miss, a voided lease), so replaying a row twice, or one whose writer already
deleted its keys, costs nothing but a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Text, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from app.core.cache.backend import CacheUnavailable
from app.core.cache.guard import GuardedBackend
from app.core.cache.metrics import CACHE_INVALIDATIONS
from app.core.db import Base, BigIntId, UTCDateTime, utcnow

logger = logging.getLogger(__package__)

# Rows replayed per round trip to the database and to Redis.
REPLAY_BATCH = 200


class PendingInvalidation(Base):
    """The keys of one committed write whose tombstones could not be placed; deleted once they are invalidated."""

    __tablename__ = "cache_invalidations"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    keys: Mapped[str] = mapped_column(Text, nullable=False)  # a JSON list of cache keys
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


def record(session: AsyncSession, keys: Sequence[str]) -> None:
    """Add the write's keys to its own transaction (called before its commit)."""
    session.add(PendingInvalidation(keys=json.dumps(list(keys))))


class Replayer:
    """Replays the recorded invalidations of every worker and host, every `interval` seconds, in this process."""

    def __init__(self, guard: GuardedBackend) -> None:
        self._guard = guard
        self._task: asyncio.Task[None] | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    def start(self, sessions: async_sessionmaker[AsyncSession], interval: float) -> None:
        if interval <= 0 or (self._task is not None and not self._task.done()):
            return
        self._sessions = sessions
        self._task = asyncio.get_running_loop().create_task(self._run(interval))

    async def _run(self, interval: float) -> None:
        while True:
            # Workers that started together spread their replays over the interval.
            await asyncio.sleep(interval * random.uniform(0.5, 1.5))  # noqa: S311 - not a secret
            try:
                await self.replay_once()
            except Exception as exc:  # the database may be down: try again next time
                logger.warning("cache: replaying recorded invalidations failed: %s", exc)

    async def replay_once(self, sessions: async_sessionmaker[AsyncSession] | None = None) -> int:
        """Delete the keys of up to REPLAY_BATCH recorded invalidations, then their rows; how many were replayed
        (0 if there were none, or Redis did not take the deletion: they stay for the next replay)."""
        guard, sessions = self._guard, sessions or self._sessions
        if sessions is None or not guard.configured or not guard.enabled:
            return 0
        async with sessions() as session:
            query = select(PendingInvalidation.id, PendingInvalidation.keys).order_by(PendingInvalidation.id)
            rows = (await session.execute(query.limit(REPLAY_BATCH))).all()
        if not rows:
            return 0
        keys = sorted({key for _, text in rows for key in json.loads(text)})
        try:
            await guard.call(guard.backend.delete(keys), patient=True)
        except CacheUnavailable:
            return 0
        async with sessions.begin() as session:
            await session.execute(delete(PendingInvalidation).where(PendingInvalidation.id.in_([i for i, _ in rows])))
        CACHE_INVALIDATIONS.labels("replayed").inc(len(rows))
        return len(rows)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
