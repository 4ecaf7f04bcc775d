"""The cache in front of the database (Redis, or an in-process backend by default): its public API and keys.

The API is the design document's: ``from app.core.cache import cache, RedisCache``; ``cache_user``,
``get_cached_user``, ``invalidate_user_cache``, ``cache_contact``, ``get_cached_contact``,
``invalidate_contact_cache`` and ``invalidate_user_contacts_cache``. Keys, behind an optional
``CACHE_KEY_PREFIX``: ``user:{user_id}``, ``contact:{contact_id}:user:{user_id}`` and ``contacts:{user_id}``, a hash
holding every cached page, search and birthday list of one user, so that invalidating them all is one ``DEL``.
Values are JSON; a user passes an allow-list of fields first. A backend that fails or does not answer makes the
API answer ``None``/``False``, never raise; a value that cannot be serialised is logged and not cached.

Consistency: whatever the cache holds is at least as new as every write whose invalidation has run. Readers fill
under leases (`engine.py`); writes put tombstones in their keys' place before their commit and delete them after
it (`invalidation.py`); a deletion that cannot reach Redis is kept, retried, and its keys are not read meanwhile.
Each operation has a short timeout that counts the event loop's attention (`deadline.py`) and a circuit breaker
stops paying it while Redis is down (`guard.py`). One user's list hash is bounded (CACHE_LIST_MAX_FIELDS,
CACHE_LIST_MAX_BYTES, leases included): past it, pages are served from the database and not cached.

On a Redis Cluster the keys carry the user's id as hash tag (``user:{42}``, ``contact:7:user:{42}``,
``contacts:{42}``), so that every key of one operation (a request's user and contact, a write's tombstones) lies in
one hash slot; on one server or behind Sentinels they are exactly as above. With ``CACHE_WRITE_POLICY=strict`` a
write whose tombstones cannot be placed (and confirmed by a replica, where a failover could promote one) before its
commit is refused (`CacheWriteRefused`, 503) and rolled back.

The process has one cache, `cache`, which the app's lifespan configures from the settings (and puts on
``app.state.cache``); a cache used before `configure` raises `CacheNotConfigured`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.breaker import CircuitBreaker
from app.core.cache.backend import (
    Backend,
    CacheNotConfigured,
    CacheUnavailable,
    CircuitOpen,
    LeaseState,
    ListBound,
)
from app.core.cache.durable import PendingInvalidation, Replayer, record
from app.core.cache.engine import Engine, FillHook, Loader
from app.core.cache.guard import GuardedBackend
from app.core.cache.invalidation import CacheWriteRefused, Invalidations
from app.core.cache.memory_backend import MemoryBackend
from app.core.cache.metrics import CACHE_FILLS, CACHE_INVALIDATIONS, CACHE_REQUESTS, REDIS_ROUNDTRIPS, Kind, hit_ratios
from app.core.cache.redis_backend import RedisBackend
from app.core.cache.serialization import USER_CACHE_FIELDS, dumps, filter_user_data, loads_value
from app.core.config import Settings
from app.core.db import after_commit, before_commit

__all__ = [
    "CACHE_FILLS",
    "CACHE_INVALIDATIONS",
    "CACHE_REQUESTS",
    "REDIS_ROUNDTRIPS",
    "USER_CACHE_FIELDS",
    "Backend",
    "Cache",
    "CacheNotConfigured",
    "CacheUnavailable",
    "CacheWriteRefused",
    "CircuitOpen",
    "Kind",
    "LeaseState",
    "ListBound",
    "MemoryBackend",
    "PendingInvalidation",
    "RedisBackend",
    "RedisCache",
    "cache",
    "dumps",
    "filter_user_data",
    "hit_ratios",
    "loads_value",
]

logger = logging.getLogger(__name__)

LIST_KEY = "contacts:"


class Cache:
    """The application's cache, on Redis or on the in-process backend. `cache` below is the process's instance;
    the lifespan configures it from the settings. `Cache(settings)` builds and configures another one."""

    def __init__(self, settings: Settings | None = None, backend: Backend | None = None) -> None:
        self._guard = GuardedBackend()
        self._invalidations = Invalidations(self._guard)
        self._guard.on_answer = self._invalidations.resume_retries
        self._engine = Engine(self._guard, self._invalidations)
        self._replayer = Replayer(self._guard)
        self._tagged = False  # keys carry hash tags (Redis Cluster)
        if settings is not None:
            self.configure(settings, backend)
        elif backend is not None:
            raise CacheNotConfigured("a backend needs settings: Cache(settings, backend)")

    # -- configuration -------------------------------------------------------------------------------------

    def configure(self, settings: Settings, backend: Backend | None = None) -> None:
        """(Re)bind to `settings`: Redis when a REDIS_* setting is present, else the in-process backend; or to
        `backend` when one is given."""
        off_reason = settings.cache_off_reason if backend is None else None
        if off_reason and settings.cache_enabled:
            logger.warning("cache: off: %s", off_reason)
        if backend is None:
            dsn = settings.redis_dsn
            backend = RedisBackend(dsn, settings) if dsn else MemoryBackend(settings.cache_memory_max_bytes)
        self._guard.configure(settings, backend, off_reason)
        self._tagged = isinstance(backend, RedisBackend) and backend.topology.hash_tags
        self._engine.reset()
        self._invalidations.reset()

    @property
    def settings(self) -> Settings:
        return self._guard.settings

    @property
    def backend(self) -> Backend:
        return self._guard.backend

    @property
    def breaker(self) -> CircuitBreaker:
        return self._guard.breaker

    @property
    def off_reason(self) -> str | None:
        """Why the cache is off on purpose (Settings.cache_off_reason), if it is."""
        return self._guard.off_reason

    @property
    def enabled(self) -> bool:
        return self._guard.enabled

    @property
    def pending_invalidations(self) -> frozenset[str]:
        return self._invalidations.pending

    @property
    def before_fill(self) -> FillHook | None:
        """Test hook: awaited between reading the database and filling the cache (fault injection)."""
        return self._engine.before_fill

    @before_fill.setter
    def before_fill(self, hook: FillHook | None) -> None:
        self._engine.before_fill = hook

    def loading(self, key: str, hash_field: str | None = None) -> bool:
        """Whether a load of this key is under way in this process (diagnostics)."""
        return self._engine.loading(key, hash_field)

    def start_replaying(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Replay, every CACHE_REPLAY_INTERVAL, the invalidations that writes of any worker recorded in the database
        (see `durable.py`); the application's lifespan starts it. Only on Redis: the in-process backend dies with
        its worker, and with it whatever that worker owed it."""
        if isinstance(self._guard.backend, RedisBackend):
            self._replayer.start(sessions, self.settings.cache_replay_interval)

    async def replay_recorded(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Replay the recorded invalidations once, now (tests and diagnostics); how many were replayed."""
        return await self._replayer.replay_once(sessions)

    async def close(self) -> None:
        await self._replayer.close()
        await self._invalidations.close()
        if self._guard.configured:
            with contextlib.suppress(Exception):  # closing a backend that failed may fail too
                await self.backend.close()

    # -- keys -------------------------------------------------------------------------------------------------

    def _owner(self, user_id: int) -> str:
        """The user's id in a key: as a hash tag on Redis Cluster, so that all of one user's keys share a slot."""
        return f"{{{user_id}}}" if self._tagged else str(user_id)

    def user_key(self, user_id: int) -> str:
        return f"{self.settings.cache_key_prefix}user:{self._owner(user_id)}"

    def contact_key(self, contact_id: int, user_id: int) -> str:
        return f"{self.settings.cache_key_prefix}contact:{contact_id}:user:{self._owner(user_id)}"

    def contacts_key(self, user_id: int) -> str:
        return f"{self.settings.cache_key_prefix}contacts:{self._owner(user_id)}"

    def card_key(self, contact_id: int, version: int, vcard_version: str, user_id: int) -> str:
        """A contact's vCard text at one version: immutable (every write makes a new version), never invalidated."""
        owner = self._owner(user_id)
        return f"{self.settings.cache_key_prefix}card:{contact_id}:{version}:{vcard_version}:user:{owner}"

    def _is_list_key(self, key: str) -> bool:
        return key[len(self.settings.cache_key_prefix) :].startswith(LIST_KEY)

    # -- the documented API -----------------------------------------------------------------------------------

    async def cache_user(self, user_id: int, user_data: Mapping[str, Any], ttl: int | None = None) -> bool:
        """Cache a user's allow-listed fields under `user:{user_id}`. False if not stored: the cache is off or
        unavailable, the data cannot be serialised, or a write's tombstone or a reader's lease holds the key."""
        key, data = self.user_key(user_id), filter_user_data(user_data)
        return await self._engine.store(key, data, ttl or self.settings.cache_user_ttl)

    async def get_cached_user(self, user_id: int) -> dict[str, Any] | None:
        return await self._engine.lookup(Kind.user, self.user_key(user_id))

    async def invalidate_user_cache(self, user_id: int) -> bool:
        return await self.invalidate(self.user_key(user_id))

    async def cache_contact(
        self, contact_id: int, user_id: int, contact_data: Mapping[str, Any], ttl: int | None = None
    ) -> bool:
        """Cache a contact under `contact:{contact_id}:user:{user_id}`; False if not stored (see `cache_user`)."""
        key, data = self.contact_key(contact_id, user_id), dict(contact_data)
        return await self._engine.store(key, data, ttl or self.settings.cache_contact_ttl)

    async def get_cached_contact(self, contact_id: int, user_id: int) -> dict[str, Any] | None:
        return await self._engine.lookup(Kind.contact, self.contact_key(contact_id, user_id))

    async def invalidate_contact_cache(self, contact_id: int, user_id: int) -> bool:
        return await self.invalidate(self.contact_key(contact_id, user_id))

    async def invalidate_user_contacts_cache(self, user_id: int) -> bool:
        return await self.invalidate(self.contacts_key(user_id))

    # -- reads ------------------------------------------------------------------------------------------------

    async def store(self, key: str, data: Any, ttl: int) -> bool:
        """Cache `data` under a key whose content never changes (it names its version): no lease, no invalidation.
        False if not stored (the cache is off or unavailable)."""
        return await self._engine.store(key, data, ttl)

    async def prefetch(self, keys: list[tuple[str, str | None]]) -> list[bytes | None] | None:
        """Read several keys in one round trip (the user and the contact of a request); None if unavailable."""
        return await self._engine.prefetch(keys)

    async def read_through(
        self,
        kind: Kind,
        key: str,
        loader: Loader,
        ttl: int,
        hash_field: str | None = None,
        prefetched: bytes | None = None,
    ) -> bytes | None:
        """The JSON of `key` (or of `hash_field` in the hash at `key`): from the cache when it holds it, else
        from `loader` (a database read returning JSON-able data, or None for "not found"), filling the cache
        under a lease. Concurrent misses of one key in this process share one load."""
        return await self._engine.read_through(kind, key, loader, ttl, hash_field, prefetched)

    # -- writes -----------------------------------------------------------------------------------------------

    async def invalidate(self, *keys: str) -> bool:
        """Delete `keys` (voiding any lease on them). On failure the keys stay pending: reads of them bypass
        the cache and the deletion is retried in the background until it succeeds."""
        return await self._invalidations.delete(list(keys))

    async def tombstone(self, *keys: str) -> bool:
        """Put tombstones in the place of `keys`: no process serves or fills them until they are deleted. Where a
        failover could promote a replica, True only once one has them too (a failover would lose them otherwise):
        within half the write's budget under CACHE_WRITE_POLICY=strict, within CACHE_OP_TIMEOUT otherwise."""
        settings = self.settings
        strict = settings.cache_write_policy == "strict"
        confirm_s = settings.cache_op_timeout_cap / 2 if strict else settings.cache_op_timeout
        keyed = [(key, self._is_list_key(key)) for key in keys]
        return await self._invalidations.tombstone(keyed, max(1, int(confirm_s * 1000)))

    def invalidate_around_commit(self, session: AsyncSession, *keys: str) -> None:
        """Invalidate `keys` around `session`'s commit: tombstones before it (so that no reader fills an old
        row during the commit, and so that a failure after it leaves nothing stale behind), deletion after.
        Under CACHE_WRITE_POLICY=strict a tombstone that cannot be placed refuses the commit (CacheWriteRefused)."""
        key_list = list(keys)
        before_commit(session, lambda: self._before_commit(session, key_list))
        after_commit(session, lambda: self.invalidate(*key_list))

    async def _before_commit(self, session: AsyncSession, keys: list[str]) -> None:
        if await self.tombstone(*keys):
            return
        if self.settings.cache_write_policy == "strict":
            logger.warning("cache: a write was refused: its tombstones could not be placed (%s)", ", ".join(keys))
            raise CacheWriteRefused
        if self.settings.cache_replay_interval > 0:
            # The write goes ahead; its invalidation is kept with it, for any worker to replay (durable.py).
            record(session, keys)

    # -- health -----------------------------------------------------------------------------------------------

    async def ping(self) -> bool:
        backend = self.backend
        try:
            return bool(await self._guard.call(backend.ping()))
        except Exception:
            return False


RedisCache = Cache
"""The design document's name for the class; the cache need not be on Redis."""

cache = Cache()
