"""Reads and fills: the read-through under leases with single flight, and the spec API's plain look-up and store.

A reader that misses takes a lease (a marker with a random token in the key's place, as in Facebook's memcache,
NSDI 2013), reads the database, then fills the key with a compare-and-set on its token; a write's deletion voids
the lease, so a late fill of an old row is refused. Concurrent misses of one key share one load in this process
(single flight) and, through the lease, across processes (the others wait briefly for the fill). The spec's
`cache_*` stores follow the same rule from the other side: they never replace a tombstone or another reader's live
lease, and no look-up ever returns a marker.

A list hash is bounded (CACHE_LIST_MAX_FIELDS, CACHE_LIST_MAX_BYTES, leases included): a lease that would pass the
bound is not granted (`full`) and a fill that would is refused and drops its lease; either way the page is served
from the database. Refusing never serves anything staler; the hash empties at the user's next write or its TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from app.core.cache.backend import MARKER_PREFIX, TOMB_PREFIX, CacheUnavailable, CircuitOpen, LeaseState, ListBound
from app.core.cache.guard import GuardedBackend
from app.core.cache.invalidation import Invalidations
from app.core.cache.metrics import CACHE_FILLS, Kind, count_lookup
from app.core.cache.serialization import dumps, dumps_or_none, loads_value

logger = logging.getLogger(__package__)

Loader = Callable[[], Awaitable[Any]]
FillHook = Callable[[str], Awaitable[None]]


@dataclass
class _Flight:
    """One in-process load of a key; concurrent misses of the key wait for it instead of querying."""

    done: asyncio.Event = field(default_factory=asyncio.Event)
    # When the read that produced `result` (from Redis or the database) was issued, on the engine's sequence: a
    # reader that joined the flight may take the result only if that read was issued after it arrived.
    source_seq: int = -1
    result: bytes | None = None
    error: BaseException | None = None


_STILL_LEASED = object()


class _Retry(Exception):
    """Internal: the load could not complete consistently; the reader starts over."""


class Engine:
    """Every read and fill of one cache. Whatever the backend holds is at least as new as every write whose
    invalidation has run; a key pending invalidation, or any key during the grace after an outage, is not read."""

    def __init__(self, guard: GuardedBackend, invalidations: Invalidations) -> None:
        self._guard = guard
        self._invalidations = invalidations
        self._flights: dict[str, _Flight] = {}
        self._seq = itertools.count()
        self._background: set[asyncio.Task[None]] = set()
        # Test hook: awaited between reading the database and filling the cache (fault injection).
        self.before_fill: FillHook | None = None

    def reset(self) -> None:
        self._flights.clear()

    def loading(self, key: str, hash_field: str | None = None) -> bool:
        """Whether a load of this key is under way in this process (diagnostics)."""
        return _flight_key(key, hash_field) in self._flights

    def usable(self, *keys: str) -> bool:
        if not self._guard.enabled or not self._guard.trusted():
            return False
        return not self._invalidations.any_pending(keys)

    # -- the spec's plain look-up and store ----------------------------------------------------------------------

    async def lookup(self, kind: Kind, key: str) -> dict[str, Any] | None:
        """The dict cached at `key`; None when it is missing, a marker (a reader's lease, a write's tombstone), not
        a dict, or the backend unavailable. Takes no lease and fills nothing."""
        if not self.usable(key):
            count_lookup(kind, "bypass")
            return None
        try:
            (raw,) = await self._guard.call(self._guard.backend.get([(key, None)]))
        except CacheUnavailable as exc:
            count_lookup(kind, "bypass" if isinstance(exc, CircuitOpen) else "error")
            return None
        data = loads_value(raw)
        count_lookup(kind, "hit" if data is not None else "miss")
        return data if isinstance(data, dict) else None

    async def store(self, key: str, data: Any, ttl: int) -> bool:
        """Cache `data` at `key` unless a write's tombstone or a reader's live lease stands there (a fill without a
        lease of its own may not replace either). False if not stored."""
        if not self.usable(key):
            return False
        try:
            value = dumps(data)
        except (TypeError, ValueError):
            logger.exception("cache: cannot serialize the value for %s; not cached", key)
            return False
        try:
            return bool(await self._guard.call(self._guard.backend.store(key, value, ttl)))
        except CacheUnavailable:
            return False

    # -- read-through ------------------------------------------------------------------------------------------

    async def prefetch(self, keys: list[tuple[str, str | None]]) -> list[bytes | None] | None:
        """Read several keys in one round trip (the user and the contact of a request); None if unavailable."""
        if not self._guard.enabled:
            return None
        try:
            return list(await self._guard.call(self._guard.backend.get(keys)))
        except CacheUnavailable:
            return None

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
        if not self.usable(key):
            count_lookup(kind, "bypass")
            return dumps_or_none(await loader())
        if prefetched is not None and not prefetched.startswith(MARKER_PREFIX):
            count_lookup(kind, "hit")
            return prefetched
        flight_key = _flight_key(key, hash_field)
        arrived = next(self._seq)
        for _attempt in range(3):
            flight = self._flights.get(flight_key)
            if flight is not None:
                await flight.done.wait()
                if flight.error is None and flight.source_seq > arrived:
                    count_lookup(kind, "hit")
                    return flight.result
                # The load began before this reader: its row may predate a write acknowledged since. Only what
                # the cache holds now is safe (see the invariant above), so look again.
                continue
            result, done = await self._lead(kind, flight_key, key, hash_field, loader, ttl)
            if done:
                return result
        count_lookup(kind, "bypass")
        return dumps_or_none(await loader())

    async def _lead(
        self, kind: Kind, flight_key: str, key: str, hash_field: str | None, loader: Loader, ttl: int
    ) -> tuple[bytes | None, bool]:
        flight = _Flight()
        self._flights[flight_key] = flight
        try:
            result = await self._load(kind, flight, key, hash_field, loader, ttl)
            flight.result = result
            return result, True
        except _Retry:
            flight.error = _Retry()
            return None, False
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            if self._flights.get(flight_key) is flight:
                del self._flights[flight_key]
            flight.done.set()

    async def _load(
        self, kind: Kind, flight: _Flight, key: str, hash_field: str | None, loader: Loader, ttl: int
    ) -> bytes | None:
        guard = self._guard
        settings = guard.settings
        token = secrets.token_hex(8)
        lease_ms = int(settings.cache_lease_ttl * 1000)
        flight.source_seq = next(self._seq)
        # A list hash is bounded per user; the bound goes only with hash fields (plain keys have none).
        limits = ListBound(settings.cache_list_max_fields, settings.cache_list_max_bytes)
        bound = {"bound": limits} if hash_field is not None else {}
        try:
            state, raw = await guard.call(guard.backend.get_or_lease(key, hash_field, token, lease_ms, ttl, **bound))
        except CacheUnavailable as exc:
            count_lookup(kind, "bypass" if isinstance(exc, CircuitOpen) else "error")
            flight.source_seq = next(self._seq)
            return dumps_or_none(await loader())
        if state is LeaseState.hit:
            count_lookup(kind, "hit")
            return cast(bytes, raw)
        if state is LeaseState.tombstoned:
            count_lookup(kind, "bypass")
            flight.source_seq = next(self._seq)
            return dumps_or_none(await loader())
        if state is LeaseState.full:
            count_lookup(kind, "miss")
            CACHE_FILLS.labels("refused").inc()
            flight.source_seq = next(self._seq)
            return dumps_or_none(await loader())
        count_lookup(kind, "miss")
        if state is LeaseState.held:
            found = await self._wait_for_fill(flight, key, hash_field)
            if found is _STILL_LEASED:
                # No fill within cache_lease_wait (its holder may be gone): serve this process's readers from one
                # database read, without filling (the lease is not ours).
                count_lookup(kind, "bypass")
                flight.source_seq = next(self._seq)
                return dumps_or_none(await loader())
            if found is not None:
                return cast(bytes, found)
            raise _Retry
        flight.source_seq = next(self._seq)
        try:
            data = await loader()
        except BaseException:
            self._release_later(key, hash_field, token)  # cancelled or failed: do not leave the lease behind
            raise
        if data is None:
            with contextlib.suppress(CacheUnavailable):
                await guard.call(guard.backend.release(key, hash_field, token))
            return None
        try:
            value = dumps(data)
        except (TypeError, ValueError):
            logger.exception("cache: cannot serialize %s; served uncached", key)
            with contextlib.suppress(CacheUnavailable):
                await guard.call(guard.backend.release(key, hash_field, token))
            return json.dumps(data, default=str).encode()
        if self.before_fill is not None:
            await self.before_fill(key)
        try:
            stored = await guard.call(guard.backend.fill(key, hash_field, token, value, ttl, **bound))
        except CacheUnavailable:
            CACHE_FILLS.labels("error").inc()
        else:
            CACHE_FILLS.labels("stored" if stored else "refused").inc()
        return value

    def _release_later(self, key: str, hash_field: str | None, token: str) -> None:
        async def release() -> None:
            with contextlib.suppress(Exception):
                await self._guard.call(self._guard.backend.release(key, hash_field, token))

        task = asyncio.get_running_loop().create_task(release())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _wait_for_fill(self, flight: _Flight, key: str, hash_field: str | None) -> bytes | object | None:
        """Another process holds the lease: poll briefly for its fill. None if the lease was voided (take a new
        one); _STILL_LEASED if no fill came within cache_lease_wait or Redis did not answer."""
        deadline = time.monotonic() + self._guard.settings.cache_lease_wait
        delay = 0.002
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)
            flight.source_seq = next(self._seq)
            try:
                (raw,) = await self._guard.call(self._guard.backend.get([(key, hash_field)]))
            except CacheUnavailable:
                return _STILL_LEASED
            if raw is None:
                return None  # the lease was voided by a write or expired: take a new one
            if raw.startswith(TOMB_PREFIX):
                return _STILL_LEASED  # a write is under way: read the database
            if not raw.startswith(MARKER_PREFIX):
                return cast(bytes, raw)
        return _STILL_LEASED


def _flight_key(key: str, hash_field: str | None) -> str:
    return key if hash_field is None else f"{key}\x00{hash_field}"
