"""The cache in front of the database: Redis in production, an in-process backend for the embedded default.

Contract (docs: shared/spec/caching-with-redis.md, README "Cache"):

* keys ``user:{user_id}``, ``contact:{contact_id}:user:{user_id}`` and ``contacts:{user_id}`` (a hash holding
  every cached page and search of one user's list, so invalidating all of them is one ``DEL``), behind an
  optional ``CACHE_KEY_PREFIX``; values are JSON, user data passes an allow-list first;
* connection errors answer ``None``/``False``, never raise; serialization errors are logged and skipped.

Consistency (the cache is never staler than the database after a write is acknowledged) rests on leases, as in
Facebook's memcache (NSDI 2013): a reader that misses puts a lease marker with a random token in the key's
place, reads the database, then fills the key with a compare-and-set on its token. A writer commits, then
deletes the key, which voids any lease taken before, so a late fill of an old row is refused. Hence the
invariant: whatever Redis holds is at least as new as every write whose invalidation has run. Each Lua script
touches one key, so the scripts also work on Redis Cluster.

One user's list hash is bounded (CACHE_LIST_MAX_FIELDS, CACHE_LIST_MAX_BYTES, leases included): a lease that would
pass the bound is not granted (`full`) and a fill that would is refused and drops its lease; either way the page is
served from the database. Refusing never serves anything staler; the hash empties at the user's next write or TTL.

When an invalidation cannot reach Redis it is kept, retried in the background, and no read of that key is
served from the cache until it succeeds. A circuit breaker stops paying the operation timeout while Redis is
down, and probes for its return.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple, Protocol, cast
from uuid import UUID

from prometheus_client import Counter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings, get_settings
from app.core.db import after_commit, before_commit

logger = logging.getLogger(__name__)

LEASE_PREFIX = b'{"__lease__":'
TOMB_PREFIX = b'{"__tomb__":'
TOMB_FIELD = "__tomb__"
# Every marker (lease or tombstone) starts so; cached data never does.
MARKER_PREFIX = b'{"__'

# Non-secret user fields that may be cached. Anything else (password hashes, tokens) is dropped.
USER_CACHE_FIELDS = frozenset(
    {"id", "email", "role", "is_active", "is_verified", "avatar_url", "created_at", "updated_at", "token_version"}
)


class Kind(enum.StrEnum):
    user = "user"
    contact = "contact"
    contacts_list = "contacts_list"


CACHE_REQUESTS = Counter(
    "contacts_api_cache_requests", "Cache look-ups by kind and result (hit, miss, error, bypass)", ["kind", "result"]
)
REDIS_ROUNDTRIPS = Counter("contacts_api_redis_roundtrips", "Round trips to the cache backend")
CACHE_INVALIDATIONS = Counter("contacts_api_cache_invalidations", "Cache invalidations by outcome", ["result"])
CACHE_FILLS = Counter("contacts_api_cache_fills", "Cache fills by outcome (stored, refused, error)", ["result"])


class CacheUnavailable(Exception):
    """The backend did not answer in time or at all."""


class CircuitOpen(CacheUnavailable):
    """The breaker is open: the backend was not asked."""


# --------------------------------------------------------------------------------------------------------------
# Backends: the primitive operations, each one round trip.
# --------------------------------------------------------------------------------------------------------------


class LeaseState(enum.IntEnum):
    granted = 0
    hit = 1
    held = 2  # another reader holds a live lease
    tombstoned = 3  # a write is under way: read the database, do not fill
    full = 4  # the user's list hash is at its bound: read the database, do not fill


class ListBound(NamedTuple):
    """The most one list hash may hold: fields, and bytes of field names plus values (leases included)."""

    fields: int
    bytes: int


class Backend(Protocol):
    name: str

    async def get(self, keys: list[tuple[str, str | None]]) -> list[bytes | None]:
        """Values of string keys (field None) or hash fields, in one round trip."""
        ...

    async def get_or_lease(
        self, key: str, hash_field: str | None, token: str, lease_ms: int, key_ttl: int, bound: ListBound | None = None
    ) -> tuple[LeaseState, bytes | None]:
        """A hit, or a lease on the key or hash field; `full` if a new lease would take the hash past `bound`."""
        ...

    async def fill(
        self, key: str, hash_field: str | None, token: str, value: bytes, ttl: int, bound: ListBound | None = None
    ) -> bool:
        """Store `value` only if the key still holds this token's lease, and (a hash field) the hash stays within
        `bound`; a fill refused for the bound drops the lease."""
        ...

    async def release(self, key: str, hash_field: str | None, token: str) -> bool:
        """Drop this token's lease; True if it was still there (no invalidation since it was taken)."""
        ...

    async def set(self, key: str, value: bytes, ttl: int) -> bool: ...

    async def tombstone(self, keys: list[tuple[str, bool]], ttl_ms: int) -> None:
        """Replace each key (hash or string) by a tombstone living `ttl_ms`: no fill, no served value."""
        ...

    async def delete(self, keys: list[str]) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


_LUA_READ = """
local v
if ARGV[1] == '' then v = redis.call('GET', KEYS[1]) else v = redis.call('HGET', KEYS[1], ARGV[1]) end
"""

# The bytes of a list hash, names and values: O(fields), and fields are bounded. Run on misses only, never on hits.
_LUA_HASH_BYTES = """
local function hash_bytes(key)
  local n = 0
  for _, f in ipairs(redis.call('HKEYS', key)) do n = n + #f + redis.call('HSTRLEN', key, f) end
  return n
end
"""

GET_OR_LEASE_LUA = (
    _LUA_HASH_BYTES
    + """
if ARGV[1] ~= '' and redis.call('HEXISTS', KEYS[1], '__tomb__') == 1 then return {3} end
"""
    + _LUA_READ
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if v then
  if string.sub(v, 1, 11) == '{"__tomb__"' then return {3} end
  if string.sub(v, 1, 13) ~= '{"__lease__":' then return {1, v} end
  local until_ms = tonumber(string.match(v, '"until":(%d+)'))
  if until_ms and until_ms > now then return {2} end
end
local lease_ms = tonumber(ARGV[3])
local marker = '{"__lease__":"' .. ARGV[2] .. '","until":' .. (now + lease_ms) .. '}'
if ARGV[1] == '' then
  redis.call('SET', KEYS[1], marker, 'PX', lease_ms)
else
  local max_fields, max_bytes = tonumber(ARGV[5]), tonumber(ARGV[6])
  if max_fields > 0 then
    local grow = #marker + (v and -#v or #ARGV[1])
    if (not v and redis.call('HLEN', KEYS[1]) >= max_fields) or hash_bytes(KEYS[1]) + grow > max_bytes then
      return {4}
    end
  end
  redis.call('HSET', KEYS[1], ARGV[1], marker)
  if redis.call('PTTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
end
return {0}
"""
)

FILL_LUA = (
    _LUA_HASH_BYTES
    + _LUA_READ
    + """
if not v then return 0 end
local expected = '{"__lease__":"' .. ARGV[2] .. '",'
if string.sub(v, 1, #expected) ~= expected then return 0 end
if ARGV[1] == '' then
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
else
  local max_bytes = tonumber(ARGV[5])
  if max_bytes > 0 and hash_bytes(KEYS[1]) + #ARGV[3] - #v > max_bytes then
    redis.call('HDEL', KEYS[1], ARGV[1])
    return 0
  end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
end
return 1
"""
)

TOMBSTONE_LUA = """
redis.call('DEL', KEYS[1])
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], '__tomb__', '{"__tomb__":1}')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], '{"__tomb__":1}', 'PX', ARGV[2])
end
return 1
"""

RELEASE_LUA = (
    _LUA_READ
    + """
if not v then return 0 end
local expected = '{"__lease__":"' .. ARGV[2] .. '",'
if string.sub(v, 1, #expected) ~= expected then return 0 end
if ARGV[1] == '' then redis.call('DEL', KEYS[1]) else redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""
)


# A timer that fires this much after its time shows that the event loop was busy elsewhere.
LOOP_LAG_SLACK = 0.005
# Loop iterations an operation still gets once its time is up, before it is failed: a reply that arrived while
# the loop was busy needs two or three (socket readable, then the waiting task's step). Free on an idle loop.
GRACE_ITERATIONS = 8


class _Deadline:
    """Expires an `asyncio.timeout` window once an operation has had `timeout` seconds of the event loop's
    attention. A plain timeout counts the loop's own work: when a worker is saturated (a herd of requests parsing
    and verifying tokens), Redis answers in time but the reply waits in the socket, and a 50 ms timeout would fail
    healthy operations, open the breaker and send everyone to the database just when the cache matters most.
    So a timer that fires late (the loop was busy) gives the operation a fresh `timeout`, and one that fires on
    time still lets the loop run a few more iterations, in which a reply already received completes the
    operation; all within `cap`. A Redis that hangs, on an idle loop, still fails after `timeout`."""

    __slots__ = ("_cap_at", "_handle", "_hops", "_loop", "_timeout", "_window")

    def __init__(self, window: asyncio.Timeout, timeout: float, cap: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._window = window
        self._timeout = timeout
        self._hops = 0
        now = self._loop.time()
        self._cap_at = now + max(timeout, cap)
        self._handle: asyncio.Handle = self._loop.call_at(now + timeout, self._fire, now + timeout)

    def _fire(self, due: float) -> None:
        now = self._loop.time()
        if now >= self._cap_at:
            self._window.reschedule(now)
        elif now - due > LOOP_LAG_SLACK:
            when = min(now + self._timeout, self._cap_at)
            self._handle = self._loop.call_at(when, self._fire, when)
        elif self._hops < GRACE_ITERATIONS:
            self._hops += 1
            self._handle = self._loop.call_soon(self._fire, now)
        else:
            self._window.reschedule(now)

    def cancel(self) -> None:
        self._handle.cancel()


class RedisBackend:
    name = "redis"

    def __init__(self, url: str, settings: Settings) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # redis-py's own timeouts are only the backstop: RedisCache._call's lag-aware deadline is the real one.
        timeout = max(settings.cache_op_timeout, settings.cache_op_timeout_cap)
        # No retries: redis-py's default (3 retries with backoff) costs seconds per request while Redis is down.
        self._pool = BlockingConnectionPool.from_url(
            url,
            max_connections=settings.cache_pool_size,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self.client = Redis(connection_pool=self._pool)
        self._get_or_lease = self.client.register_script(GET_OR_LEASE_LUA)
        self._fill = self.client.register_script(FILL_LUA)
        self._release = self.client.register_script(RELEASE_LUA)
        self._tombstone = self.client.register_script(TOMBSTONE_LUA)

    async def get(self, keys: list[tuple[str, str | None]]) -> list[bytes | None]:
        if len(keys) == 1:
            key, hash_field = keys[0]
            value = await (self.client.get(key) if hash_field is None else self.client.hget(key, hash_field))
            return [cast(bytes | None, value)]
        async with self.client.pipeline(transaction=False) as pipe:
            for key, hash_field in keys:
                if hash_field is None:
                    pipe.get(key)
                else:
                    pipe.hget(key, hash_field)
            return list(await pipe.execute())

    async def get_or_lease(
        self, key: str, hash_field: str | None, token: str, lease_ms: int, key_ttl: int, bound: ListBound | None = None
    ) -> tuple[LeaseState, bytes | None]:
        fields, size = bound or (0, 0)
        result = await self._get_or_lease(keys=[key], args=[hash_field or "", token, lease_ms, key_ttl, fields, size])
        state = LeaseState(int(result[0]))
        return state, (result[1] if state is LeaseState.hit else None)

    async def fill(
        self, key: str, hash_field: str | None, token: str, value: bytes, ttl: int, bound: ListBound | None = None
    ) -> bool:
        size = bound.bytes if bound else 0
        return bool(await self._fill(keys=[key], args=[hash_field or "", token, value, ttl, size]))

    async def release(self, key: str, hash_field: str | None, token: str) -> bool:
        return bool(await self._release(keys=[key], args=[hash_field or "", token]))

    async def set(self, key: str, value: bytes, ttl: int) -> bool:
        return bool(await self.client.set(key, value, ex=ttl))

    async def tombstone(self, keys: list[tuple[str, bool]], ttl_ms: int) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for key, is_hash in keys:
                await self._tombstone(keys=[key], args=["1" if is_hash else "0", ttl_ms], client=pipe)
            await pipe.execute()

    async def delete(self, keys: list[str]) -> None:
        # One DEL per key in one pipeline: a multi-key DEL would span hash slots on Redis Cluster.
        if len(keys) == 1:
            await self.client.delete(keys[0])
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.delete(key)
            await pipe.execute()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def close(self) -> None:
        await self.client.aclose()
        await self._pool.disconnect()


# What a key and a hash field cost the in-process backend beyond the bytes of their names and values: Python's
# objects and dict slots (tracemalloc, CPython 3.11: 220-250 bytes a key, 350 a hash, 135 a field; rounded up).
ENTRY_OVERHEAD = 400
FIELD_OVERHEAD = 160


@dataclass
class _Entry:
    value: bytes | dict[str, bytes]
    expires_at: float | None
    size: int = 0  # bytes of the value: a hash's field names (UTF-8) and values


def _cost(key: str, entry: _Entry) -> int:
    fields = len(entry.value) if isinstance(entry.value, dict) else 0
    return ENTRY_OVERHEAD + len(key) + entry.size + FIELD_OVERHEAD * fields


def _is_tombstone(entry: _Entry) -> bool:
    if isinstance(entry.value, dict):
        return TOMB_FIELD in entry.value
    return entry.value.startswith(TOMB_PREFIX)


class MemoryBackend:
    """An in-process backend with Redis's semantics for the operations the cache uses (embedded default), within
    a memory budget: past `max_bytes` the oldest keys are evicted (as Redis with `maxmemory` and an LRU policy),
    never a write's tombstone."""

    name = "memory"

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._data: dict[str, _Entry] = {}
        self._max_bytes = max_bytes
        self.used_bytes = 0  # the sum of `_cost` over the entries

    def _entry(self, key: str) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= time.monotonic():
            self._drop(key)
            return None
        return entry

    def _drop(self, key: str) -> None:
        entry = self._data.pop(key, None)
        if entry is not None:
            self.used_bytes -= _cost(key, entry)

    def _read(self, key: str, hash_field: str | None) -> bytes | None:
        entry = self._entry(key)
        if entry is None:
            return None
        if hash_field is None:
            return entry.value if isinstance(entry.value, bytes) else None
        return entry.value.get(hash_field) if isinstance(entry.value, dict) else None

    def _write(self, key: str, hash_field: str | None, value: bytes | None, ttl: float | None) -> None:
        """Set the key (hash_field None) or a field of the hash at key; value None deletes the field."""
        entry = self._entry(key)
        expires_at = time.monotonic() + ttl if ttl is not None else None
        if hash_field is None or entry is None or not isinstance(entry.value, dict):
            self._drop(key)
            if value is None:
                return
            entry = _Entry(value, expires_at, len(value)) if hash_field is None else _Entry({}, expires_at)
            self._data[key] = entry
            self.used_bytes += _cost(key, entry)
            if hash_field is None:
                self._evict(key)
                return
        elif entry.expires_at is None and ttl is not None:
            entry.expires_at = expires_at
        fields = cast(dict[str, bytes], entry.value)
        self.used_bytes -= _cost(key, entry)
        old = fields.pop(hash_field, None)
        if old is not None:
            entry.size -= len(hash_field.encode()) + len(old)
        if value is not None:
            fields[hash_field] = value
            entry.size += len(hash_field.encode()) + len(value)
        self.used_bytes += _cost(key, entry)
        if not fields:
            self._drop(key)  # as Redis deletes an empty hash
        self._evict(key)

    def _evict(self, written: str) -> None:
        """Back under the budget: expired keys first, then the oldest, down to 90% so that the scan is paid
        once per tenth of the budget. Tombstones stay; the key just written goes last."""
        if self.used_bytes <= self._max_bytes:
            return
        now = time.monotonic()
        for key in [k for k, e in self._data.items() if e.expires_at is not None and e.expires_at <= now]:
            self._drop(key)
        target = self._max_bytes * 9 // 10
        excess = self.used_bytes - target
        victims: list[str] = []
        for key, entry in self._data.items():
            if excess <= 0:
                break
            if key != written and not _is_tombstone(entry):
                victims.append(key)
                excess -= _cost(key, entry)
        for key in victims:
            self._drop(key)
        written_entry = self._data.get(written)
        if self.used_bytes > self._max_bytes and written_entry is not None and not _is_tombstone(written_entry):
            self._drop(written)

    def hash_fields(self, key: str) -> dict[str, bytes]:
        """Every field of the hash at `key` and its value (Redis's HGETALL)."""
        entry = self._entry(key)
        return dict(entry.value) if entry is not None and isinstance(entry.value, dict) else {}

    async def get(self, keys: list[tuple[str, str | None]]) -> list[bytes | None]:
        return [self._read(key, hash_field) for key, hash_field in keys]

    async def get_or_lease(
        self, key: str, hash_field: str | None, token: str, lease_ms: int, key_ttl: int, bound: ListBound | None = None
    ) -> tuple[LeaseState, bytes | None]:
        if hash_field is not None and self._read(key, TOMB_FIELD) is not None:
            return LeaseState.tombstoned, None
        value = self._read(key, hash_field)
        now_ms = int(time.time() * 1000)
        if value is not None and value.startswith(TOMB_PREFIX):
            return LeaseState.tombstoned, None
        if value is not None:
            if not value.startswith(LEASE_PREFIX):
                return LeaseState.hit, value
            if _lease_until(value) > now_ms:
                return LeaseState.held, None
        marker = _lease_marker(token, now_ms + lease_ms)
        if hash_field is None:
            self._write(key, None, marker, lease_ms / 1000)
            return LeaseState.granted, None
        if bound is not None:
            entry = self._entry(key)
            fields, size = (len(entry.value), entry.size) if entry and isinstance(entry.value, dict) else (0, 0)
            grow = len(marker) - len(value) if value is not None else len(hash_field.encode()) + len(marker)
            if (value is None and fields >= bound.fields) or size + grow > bound.bytes:
                return LeaseState.full, None
        self._write(key, hash_field, marker, key_ttl)
        return LeaseState.granted, None

    def _holds(self, key: str, hash_field: str | None, token: str) -> bool:
        value = self._read(key, hash_field)
        return value is not None and value.startswith(b'{"__lease__":"' + token.encode() + b'",')

    async def fill(
        self, key: str, hash_field: str | None, token: str, value: bytes, ttl: int, bound: ListBound | None = None
    ) -> bool:
        if not self._holds(key, hash_field, token):
            return False
        if hash_field is not None and bound is not None:
            entry = self._data[key]
            lease = cast(dict[str, bytes], entry.value)[hash_field]
            if entry.size + len(value) - len(lease) > bound.bytes:
                self._write(key, hash_field, None, None)
                return False
        self._write(key, hash_field, value, ttl)
        return True

    async def release(self, key: str, hash_field: str | None, token: str) -> bool:
        if not self._holds(key, hash_field, token):
            return False
        if hash_field is None:
            self._drop(key)
        else:
            self._write(key, hash_field, None, None)
        return True

    async def set(self, key: str, value: bytes, ttl: int) -> bool:
        self._write(key, None, value, ttl)
        return True

    async def tombstone(self, keys: list[tuple[str, bool]], ttl_ms: int) -> None:
        for key, is_hash in keys:
            self._drop(key)
            self._write(key, TOMB_FIELD if is_hash else None, b'{"__tomb__":1}', ttl_ms / 1000)

    async def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._drop(key)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()
        self.used_bytes = 0

    def ttl(self, key: str) -> float | None:
        entry = self._entry(key)
        if entry is None or entry.expires_at is None:
            return None
        return entry.expires_at - time.monotonic()


def _lease_marker(token: str, until_ms: int) -> bytes:
    return b'{"__lease__":"%s","until":%d}' % (token.encode(), until_ms)


def _lease_until(marker: bytes) -> int:
    try:
        return int(json.loads(marker).get("until", 0))
    except (ValueError, AttributeError):
        return 0


# --------------------------------------------------------------------------------------------------------------
# Circuit breaker
# --------------------------------------------------------------------------------------------------------------


class CircuitBreaker:
    """Closed: calls go through. After `threshold` consecutive failures it opens and calls are skipped for
    `cooldown` seconds; then one probe is let through (half-open) and its outcome closes or reopens it."""

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if self._probing or time.monotonic() - self.opened_at < self.cooldown:
            return False
        self._probing = True
        return True

    def record_success(self) -> bool:
        """Returns True when this success closed an open breaker."""
        was_open = self.opened_at is not None
        self.failures = 0
        self.opened_at = None
        self._probing = False
        return was_open

    def abandon_probe(self) -> None:
        """The probe ended without an answer either way (cancelled): let the next call probe."""
        self._probing = False

    def record_failure(self) -> None:
        self.failures += 1
        if self._probing or self.failures >= self.threshold:
            self.opened_at = time.monotonic()
        self._probing = False


# --------------------------------------------------------------------------------------------------------------
# Serialization
# --------------------------------------------------------------------------------------------------------------


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(data: Any) -> bytes:
    return json.dumps(data, default=_json_default, separators=(",", ":"), ensure_ascii=False).encode()


def filter_user_data(user_data: Mapping[str, Any]) -> dict[str, Any]:
    """Only allow-listed, non-secret fields of a user ever reach the cache."""
    return {key: value for key, value in user_data.items() if key in USER_CACHE_FIELDS}


# --------------------------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------------------------

Loader = Callable[[], Awaitable[Any]]
FillHook = Callable[[str], Awaitable[None]]


@dataclass
class _Flight:
    """One in-process load of a key; concurrent misses of the key wait for it instead of querying."""

    done: asyncio.Event = field(default_factory=asyncio.Event)
    # When the read that produced `result` (from Redis or the database) was issued, on the cache's sequence: a
    # reader that joined the flight may take the result only if that read was issued after it arrived.
    source_seq: int = -1
    result: bytes | None = None
    error: BaseException | None = None


class RedisCache:
    """The application's cache. `cache` below is its instance; the lifespan configures it from the settings."""

    def __init__(self, settings: Settings | None = None, backend: Backend | None = None) -> None:
        self._settings: Settings | None = None
        self._backend: Backend | None = None
        self._breaker: CircuitBreaker | None = None
        self._flights: dict[str, _Flight] = {}
        self._seq = itertools.count()
        self._background: set[asyncio.Task[None]] = set()
        self._pending: set[str] = set()
        self._retry_task: asyncio.Task[None] | None = None
        # After an outage this process saw, another process may still owe Redis an invalidation: read
        # nothing from the cache until then (see `_call`).
        self._failed_since_success = False
        self._distrust_until = 0.0
        self._in_flight = 0  # Redis operations of this process under way
        self.off_reason: str | None = None  # why the cache is off (see Settings.cache_off_reason), if it is
        # Test hook: awaited between reading the database and filling the cache (fault injection).
        self.before_fill: FillHook | None = None
        if settings is not None:
            self.configure(settings, backend)
        else:
            self._backend = backend

    # -- configuration -------------------------------------------------------------------------------------

    def configure(self, settings: Settings, backend: Backend | None = None) -> None:
        """(Re)bind to `settings`: Redis when a REDIS_* setting is present, else the in-process backend."""
        self._settings = settings
        self.off_reason = settings.cache_off_reason if backend is None else None
        if self.off_reason and settings.cache_enabled:
            logger.warning("cache: off: %s", self.off_reason)
        if backend is None:
            dsn = settings.redis_dsn
            backend = RedisBackend(dsn, settings) if dsn else MemoryBackend(settings.cache_memory_max_bytes)
        self._backend = backend
        self._breaker = CircuitBreaker(settings.cache_breaker_threshold, settings.cache_breaker_cooldown)
        self._flights.clear()
        self._pending.clear()
        self._failed_since_success = False
        self._distrust_until = 0.0

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self.configure(get_settings(), self._backend)
        return cast(Settings, self._settings)

    @property
    def backend(self) -> Backend:
        if self._backend is None or self._breaker is None:
            self.configure(self.settings, self._backend)
        return cast(Backend, self._backend)

    @property
    def breaker(self) -> CircuitBreaker:
        if self._backend is None or self._breaker is None:
            self.configure(self.settings, self._backend)
        return cast(CircuitBreaker, self._breaker)

    @property
    def enabled(self) -> bool:
        return self.settings.cache_enabled and self.off_reason is None

    @property
    def pending_invalidations(self) -> frozenset[str]:
        return frozenset(self._pending)

    async def close(self) -> None:
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._retry_task
            self._retry_task = None
        if self._backend is not None:
            with contextlib.suppress(Exception):
                await self._backend.close()

    # -- keys -------------------------------------------------------------------------------------------------

    def user_key(self, user_id: int) -> str:
        return f"{self.settings.cache_key_prefix}user:{user_id}"

    def contact_key(self, contact_id: int, user_id: int) -> str:
        return f"{self.settings.cache_key_prefix}contact:{contact_id}:user:{user_id}"

    def contacts_key(self, user_id: int) -> str:
        return f"{self.settings.cache_key_prefix}contacts:{user_id}"

    # -- the guarded call -------------------------------------------------------------------------------------

    async def _call(self, operation: Awaitable[Any], *, patient: bool = False) -> Any:
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
                deadline = _Deadline(window, timeout, settings.cache_op_timeout_cap)
                try:
                    result = await operation
                finally:
                    deadline.cancel()
                    self._in_flight -= 1
        except (OSError, TimeoutError, RedisConnectionError, RedisTimeoutError) as exc:
            breaker.record_failure()
            self._failed_since_success = True
            raise CacheUnavailable(str(exc)) from exc
        except RedisError as exc:
            # The server answered (e.g. WRONGTYPE on a key written by hand): not an outage, but no cache either.
            breaker.record_success()
            logger.warning("cache: Redis refused an operation: %s", exc)
            raise CacheUnavailable(str(exc)) from exc
        except BaseException:
            breaker.abandon_probe()
            raise
        breaker.record_success()
        if self._failed_since_success:
            # Redis answers again. Invalidations that other processes could not deliver during the outage
            # are being retried now (within about a breaker cooldown): until they land, serve from the database.
            self._failed_since_success = False
            self._distrust_until = time.monotonic() + self.settings.cache_recovery_grace
        if self._pending:
            self._start_retrying()
        return result

    def _usable(self, *keys: str) -> bool:
        if not self.enabled:
            return False
        if self._distrust_until and time.monotonic() < self._distrust_until:
            return False
        return not (self._pending and any(key in self._pending for key in keys))

    # -- the documented API -----------------------------------------------------------------------------------

    async def cache_user(self, user_id: int, user_data: Mapping[str, Any], ttl: int | None = None) -> bool:
        """Cache a user's allow-listed fields under `user:{user_id}`. False if not stored."""
        return await self._set(self.user_key(user_id), filter_user_data(user_data), ttl or self.settings.cache_user_ttl)

    async def get_cached_user(self, user_id: int) -> dict[str, Any] | None:
        return await self._get(Kind.user, self.user_key(user_id))

    async def invalidate_user_cache(self, user_id: int) -> bool:
        return await self.invalidate(self.user_key(user_id))

    async def cache_contact(
        self, contact_id: int, user_id: int, contact_data: Mapping[str, Any], ttl: int | None = None
    ) -> bool:
        return await self._set(
            self.contact_key(contact_id, user_id), dict(contact_data), ttl or self.settings.cache_contact_ttl
        )

    async def get_cached_contact(self, contact_id: int, user_id: int) -> dict[str, Any] | None:
        return await self._get(Kind.contact, self.contact_key(contact_id, user_id))

    async def invalidate_contact_cache(self, contact_id: int, user_id: int) -> bool:
        return await self.invalidate(self.contact_key(contact_id, user_id))

    async def invalidate_user_contacts_cache(self, user_id: int) -> bool:
        return await self.invalidate(self.contacts_key(user_id))

    async def _set(self, key: str, data: Any, ttl: int) -> bool:
        if not self._usable(key):
            return False
        try:
            value = dumps(data)
        except (TypeError, ValueError):
            logger.exception("cache: cannot serialize the value for %s; not cached", key)
            return False
        try:
            return bool(await self._call(self.backend.set(key, value, ttl)))
        except CacheUnavailable:
            return False

    async def _get(self, kind: Kind, key: str) -> dict[str, Any] | None:
        if not self._usable(key):
            CACHE_REQUESTS.labels(kind, "bypass").inc()
            return None
        try:
            (raw,) = await self._call(self.backend.get([(key, None)]))
        except CacheUnavailable as exc:
            CACHE_REQUESTS.labels(kind, "bypass" if isinstance(exc, CircuitOpen) else "error").inc()
            return None
        data = self._decode(raw)
        CACHE_REQUESTS.labels(kind, "hit" if data is not None else "miss").inc()
        return data if isinstance(data, dict) else None

    @staticmethod
    def _decode(raw: bytes | None) -> Any:
        if raw is None or raw.startswith(MARKER_PREFIX):
            return None
        try:
            return json.loads(raw)
        except ValueError:
            logger.warning("cache: undecodable value ignored")
            return None

    # -- invalidation ------------------------------------------------------------------------------------------

    async def invalidate(self, *keys: str) -> bool:
        """Delete `keys` (voiding any lease on them). On failure the keys stay pending: reads of them bypass
        the cache and the deletion is retried in the background until it succeeds."""
        key_list = list(keys)
        if not key_list:
            return True
        try:
            await self._call(self.backend.delete(key_list), patient=True)
        except CacheUnavailable:
            CACHE_INVALIDATIONS.labels("deferred").inc()
            self._pending.update(key_list)
            self._start_retrying()
            return False
        CACHE_INVALIDATIONS.labels("done").inc()
        self._pending.difference_update(key_list)
        return True

    def invalidate_on_commit(self, session: AsyncSession, *keys: str) -> None:
        """Invalidate `keys` around `session`'s commit: tombstones before it (so that no reader fills an old
        row during the commit, and so that a failure after it leaves nothing stale behind), deletion after."""
        key_list = list(keys)
        before_commit(session, lambda: self.tombstone(*key_list))
        after_commit(session, lambda: self.invalidate(*key_list))

    async def tombstone(self, *keys: str) -> bool:
        if not self.enabled or not keys:
            return True
        prefix = self.settings.cache_key_prefix
        marked = [(key, key[len(prefix) :].startswith("contacts:")) for key in keys]
        ttl_ms = int(self.settings.cache_tombstone_ttl * 1000)
        try:
            await self._call(self.backend.tombstone(marked, ttl_ms), patient=True)
        except CacheUnavailable:
            return False
        return True

    def _start_retrying(self) -> None:
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(self._retry_pending())

    async def _retry_pending(self) -> None:
        delay = 0.05
        while self._pending:
            await asyncio.sleep(delay)
            batch = list(self._pending)
            try:
                await self._call(self.backend.delete(batch))
            except CacheUnavailable:
                delay = min(delay * 2, 0.25)
                continue
            except Exception:
                logger.exception("cache: retrying invalidations failed")
                delay = min(delay * 2, 0.25)
                continue
            self._pending.difference_update(batch)
            CACHE_INVALIDATIONS.labels("retried").inc(len(batch))

    # -- read-through ------------------------------------------------------------------------------------------

    async def prefetch(self, keys: list[tuple[str, str | None]]) -> list[bytes | None] | None:
        """Read several keys in one round trip (the user and the contact of a request); None if unavailable."""
        if not self.enabled:
            return None
        try:
            return list(await self._call(self.backend.get(keys)))
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
        if not self._usable(key):
            CACHE_REQUESTS.labels(kind, "bypass").inc()
            return _encode_or_none(await loader())
        if prefetched is not None and not prefetched.startswith(MARKER_PREFIX):
            CACHE_REQUESTS.labels(kind, "hit").inc()
            return prefetched
        flight_key = key if hash_field is None else f"{key}\x00{hash_field}"
        arrived = next(self._seq)
        for _attempt in range(3):
            flight = self._flights.get(flight_key)
            if flight is not None:
                await flight.done.wait()
                if flight.error is None and flight.source_seq > arrived:
                    CACHE_REQUESTS.labels(kind, "hit").inc()
                    return flight.result
                # The load began before this reader: its row may predate a write acknowledged since. Only what
                # the cache holds now is safe (see the invariant above), so look again.
                continue
            result, done = await self._lead(kind, flight_key, key, hash_field, loader, ttl)
            if done:
                return result
        CACHE_REQUESTS.labels(kind, "bypass").inc()
        return _encode_or_none(await loader())

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
        settings = self.settings
        token = secrets.token_hex(8)
        lease_ms = int(settings.cache_lease_ttl * 1000)
        flight.source_seq = next(self._seq)
        # A list hash is bounded per user; the bound goes only with hash fields (plain keys have none).
        limits = ListBound(settings.cache_list_max_fields, settings.cache_list_max_bytes)
        bound = {"bound": limits} if hash_field is not None else {}
        try:
            state, raw = await self._call(self.backend.get_or_lease(key, hash_field, token, lease_ms, ttl, **bound))
        except CacheUnavailable as exc:
            CACHE_REQUESTS.labels(kind, "bypass" if isinstance(exc, CircuitOpen) else "error").inc()
            flight.source_seq = next(self._seq)
            return _encode_or_none(await loader())
        if state is LeaseState.hit:
            CACHE_REQUESTS.labels(kind, "hit").inc()
            return cast(bytes, raw)
        if state is LeaseState.tombstoned:
            CACHE_REQUESTS.labels(kind, "bypass").inc()
            flight.source_seq = next(self._seq)
            return _encode_or_none(await loader())
        if state is LeaseState.full:
            CACHE_REQUESTS.labels(kind, "miss").inc()
            CACHE_FILLS.labels("refused").inc()
            flight.source_seq = next(self._seq)
            return _encode_or_none(await loader())
        CACHE_REQUESTS.labels(kind, "miss").inc()
        if state is LeaseState.held:
            found = await self._wait_for_fill(flight, key, hash_field)
            if found is _STILL_LEASED:
                # No fill within cache_lease_wait (its holder may be gone): serve this process's readers from one
                # database read, without filling (the lease is not ours).
                CACHE_REQUESTS.labels(kind, "bypass").inc()
                flight.source_seq = next(self._seq)
                return _encode_or_none(await loader())
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
                await self._call(self.backend.release(key, hash_field, token))
            return None
        try:
            value = dumps(data)
        except (TypeError, ValueError):
            logger.exception("cache: cannot serialize %s; served uncached", key)
            with contextlib.suppress(CacheUnavailable):
                await self._call(self.backend.release(key, hash_field, token))
            return json.dumps(data, default=str).encode()
        if self.before_fill is not None:
            await self.before_fill(key)
        try:
            stored = await self._call(self.backend.fill(key, hash_field, token, value, ttl, **bound))
        except CacheUnavailable:
            CACHE_FILLS.labels("error").inc()
        else:
            CACHE_FILLS.labels("stored" if stored else "refused").inc()
        return value

    def _release_later(self, key: str, hash_field: str | None, token: str) -> None:
        async def release() -> None:
            with contextlib.suppress(Exception):
                await self._call(self.backend.release(key, hash_field, token))

        task = asyncio.get_running_loop().create_task(release())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _wait_for_fill(self, flight: _Flight, key: str, hash_field: str | None) -> bytes | object | None:
        """Another process holds the lease: poll briefly for its fill. None if the lease was voided (take a new
        one); _STILL_LEASED if no fill came within cache_lease_wait or Redis did not answer."""
        deadline = time.monotonic() + self.settings.cache_lease_wait
        delay = 0.002
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)
            flight.source_seq = next(self._seq)
            try:
                (raw,) = await self._call(self.backend.get([(key, hash_field)]))
            except CacheUnavailable:
                return _STILL_LEASED
            if raw is None:
                return None  # the lease was voided by a write or expired: take a new one
            if raw.startswith(TOMB_PREFIX):
                return _STILL_LEASED  # a write is under way: read the database
            if not raw.startswith(MARKER_PREFIX):
                return cast(bytes, raw)
        return _STILL_LEASED

    # -- health ---------------------------------------------------------------------------------------------------

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self.backend.ping()))
        except CacheUnavailable:
            return False
        except Exception:
            return False


_STILL_LEASED = object()


class _Retry(Exception):
    """Internal: the load could not complete consistently; the reader starts over."""


def _encode_or_none(data: Any) -> bytes | None:
    if data is None:
        return None
    return dumps(data)


def hit_ratios(samples: Iterable[tuple[str, str, float]]) -> dict[str, float]:
    """Hit ratio per kind from (kind, result, count) samples."""
    totals: dict[str, list[float]] = {}
    for kind, result, value in samples:
        hits_total = totals.setdefault(kind, [0.0, 0.0])
        if result == "hit":
            hits_total[0] += value
        if result in ("hit", "miss"):
            hits_total[1] += value
    return {kind: (hits / total if total else 0.0) for kind, (hits, total) in totals.items()}


cache = RedisCache()
