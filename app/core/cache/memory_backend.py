"""The in-process backend (the embedded default): Redis's semantics for the cache's operations, within a budget."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

from app.core.cache.backend import (
    LEASE_PREFIX,
    TOMB_FIELD,
    TOMB_PREFIX,
    TOMBSTONE,
    LeaseState,
    ListBound,
    lease_marker,
    lease_prefix,
    lease_until,
)

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

    def _live_lease(self, value: bytes | None) -> bool:
        return value is not None and value.startswith(LEASE_PREFIX) and lease_until(value) > int(time.time() * 1000)

    def _holds(self, key: str, hash_field: str | None, token: str) -> bool:
        value = self._read(key, hash_field)
        return value is not None and value.startswith(lease_prefix(token))

    def hash_fields(self, key: str) -> dict[str, bytes]:
        """Every field of the hash at `key` and its value (Redis's HGETALL)."""
        entry = self._entry(key)
        return dict(entry.value) if entry is not None and isinstance(entry.value, dict) else {}

    def ttl(self, key: str) -> float | None:
        """Seconds left before `key` expires; None if it is missing or has no expiry."""
        entry = self._entry(key)
        if entry is None or entry.expires_at is None:
            return None
        return entry.expires_at - time.monotonic()

    # -- the Backend protocol ----------------------------------------------------------------------------------

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
            if lease_until(value) > now_ms:
                return LeaseState.held, None
        marker = lease_marker(token, now_ms + lease_ms)
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

    async def store(self, key: str, value: bytes, ttl: int) -> bool:
        current = self._read(key, None)
        if current is not None and (current.startswith(TOMB_PREFIX) or self._live_lease(current)):
            return False
        self._write(key, None, value, ttl)
        return True

    async def tombstone(self, keys: list[tuple[str, bool]], ttl_ms: int, confirm_ms: int = 0) -> None:
        for key, is_hash in keys:
            self._drop(key)
            self._write(key, TOMB_FIELD if is_hash else None, TOMBSTONE, ttl_ms / 1000)

    async def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._drop(key)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()
        self.used_bytes = 0
