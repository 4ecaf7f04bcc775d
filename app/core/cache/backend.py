"""What a cache backend must do (one round trip per operation), the markers it keeps in a key's place, its errors.

A key (or a field of a list hash) holds either cached JSON or a marker, and a marker always starts with
``{"__``, which the cache's own values (a user, a contact, a page: dicts of ordinary field names) never do:

* a *lease* ``{"__lease__":"<token>","until":<ms>}``: a reader missed, is reading the database and alone may
  fill the key, with a compare-and-set on its token, until the time in ``until``;
* a *tombstone* ``{"__tomb__":1}`` (in a hash: the field ``__tomb__``): a write is under way; nobody fills the
  key and nothing is served from it until the write deletes it after its commit (or it expires).
"""

from __future__ import annotations

import enum
import json
from typing import NamedTuple, Protocol

LEASE_PREFIX = b'{"__lease__":'
TOMB_PREFIX = b'{"__tomb__":'
TOMBSTONE = b'{"__tomb__":1}'
TOMB_FIELD = "__tomb__"
# Every marker (lease or tombstone) starts so; cached data never does.
MARKER_PREFIX = b'{"__'


class CacheUnavailable(Exception):
    """The backend did not answer in time or at all."""


class CircuitOpen(CacheUnavailable):
    """The breaker is open: the backend was not asked."""


class ReplicaUnconfirmed(CacheUnavailable):
    """A tombstone reached the master, but no replica confirmed it in time (WAIT): a failover could lose it."""


class CacheNotConfigured(RuntimeError):
    """The cache was used before `configure(settings)`: the app's lifespan and the CLI configure it."""


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


def lease_marker(token: str, until_ms: int) -> bytes:
    return b'{"__lease__":"%s","until":%d}' % (token.encode(), until_ms)


def lease_prefix(token: str) -> bytes:
    """How the lease of `token` starts: what a fill or a release compares the key's value with."""
    return b'{"__lease__":"' + token.encode() + b'",'


def lease_until(marker: bytes) -> int:
    """The end of a lease, in ms since the epoch (0 for a malformed marker: expired)."""
    try:
        return int(json.loads(marker).get("until", 0))
    except (ValueError, AttributeError):
        return 0


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

    async def store(self, key: str, value: bytes, ttl: int) -> bool:
        """Set a string key to `value` unless a tombstone or another reader's live lease stands in its place
        (False then): a value handed in from outside (the spec's `cache_user`) is a fill without a lease."""
        ...

    async def tombstone(self, keys: list[tuple[str, bool]], ttl_ms: int, confirm_ms: int = 0) -> None:
        """Replace each key (hash or string) by a tombstone living `ttl_ms`: no fill, no served value. With
        `confirm_ms`, where a failover could promote a replica, return only once a replica has the tombstones
        (ReplicaUnconfirmed if none has them within `confirm_ms`)."""
        ...

    async def delete(self, keys: list[str]) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
