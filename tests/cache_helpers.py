"""Helpers shared by the cache tests: metric readings, sample values, what a backend holds (read without the cache)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY
from redis.asyncio import Redis

from app.core.cache import REDIS_ROUNDTRIPS, Cache, Kind, MemoryBackend

FULL_USER = {
    "id": 7,
    "email": "ada@example.com",
    "role": "user",
    "is_active": True,
    "is_verified": True,
    "avatar_url": None,
    "created_at": "2026-01-02T03:04:05+00:00",
    "updated_at": "2026-01-02T03:04:05+00:00",
    "token_version": 2,
    "default_region": "GB",
}

CONTACT = {
    "id": 3,
    "user_id": 7,
    "first_name": "Grace",
    "last_name": "Hopper",
    "email": "grace@example.com",
    "phone": "+1 555 0100",
    "birthday": "1906-12-09",
    "notes": None,
    "created_at": "2026-01-02T03:04:05+00:00",
    "updated_at": "2026-01-02T03:04:05+00:00",
}


def counter(name: str, **labels: str) -> float:
    """The current value of a Prometheus sample (0 before its first increment)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def requests_count(kind: str, result: str) -> float:
    """Cache look-ups of `kind` that ended in `result` (hit, miss, error, bypass)."""
    return counter("contacts_api_cache_requests_total", kind=kind, result=result)


def roundtrips() -> float:
    return float(REDIS_ROUNDTRIPS._value.get())


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def about(expected: int, observed: float | None) -> bool:
    """A TTL read back a moment after it was set: at most `expected`, and not 3 s less."""
    return observed is not None and expected - 3 <= observed <= expected


def assert_ttl(observed: float | None, expected: int) -> None:
    assert observed is not None, "the key has no expiry"
    assert about(expected, observed), f"TTL {observed}, expected about {expected}"


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


@dataclass
class Store:
    """Reads what a cache's backend holds, without going through the cache's own read path: through a Redis
    client of its own, or through the in-process backend's reads."""

    cache: Cache
    redis: Redis | None

    async def raw(self, key: str) -> bytes | None:
        if self.redis is not None:
            return _bytes(await self.redis.get(key))
        (value,) = await self.cache.backend.get([(key, None)])
        return value

    async def field(self, key: str, hash_field: str) -> bytes | None:
        if self.redis is not None:
            return _bytes(await self.redis.hget(key, hash_field))
        (value,) = await self.cache.backend.get([(key, hash_field)])
        return value

    async def json(self, key: str) -> Any:
        raw = await self.raw(key)
        assert raw is not None, f"{key} is not stored"
        return json.loads(raw)

    async def ttl(self, key: str) -> float | None:
        """Seconds left, or None when the key is missing or has no expiry."""
        if self.redis is not None:
            seconds = await self.redis.ttl(key)
            return None if seconds < 0 else float(seconds)
        backend = self.cache.backend
        assert isinstance(backend, MemoryBackend)
        return backend.ttl(key)

    async def hash(self, key: str) -> dict[str, bytes]:
        """Every field of the hash at `key` and its value."""
        if self.redis is not None:
            return {text(name): value for name, value in (await self.redis.hgetall(key)).items()}
        backend = self.cache.backend
        assert isinstance(backend, MemoryBackend)
        return backend.hash_fields(key)


async def seed_list_field(instance: Cache, user_id: int, hash_field: str, page: dict[str, Any]) -> bytes | None:
    """Read one list page through `instance`, from a loader returning `page`: fills the field on a miss."""

    async def load() -> dict[str, Any]:
        return page

    return await instance.read_through(
        Kind.contacts_list, instance.contacts_key(user_id), load, instance.settings.cache_contacts_list_ttl, hash_field
    )


def page_of(number: int) -> dict[str, Any]:
    """A list page of about 1 KB; `number` tells pages apart."""
    return {"items": [CONTACT, CONTACT, CONTACT], "total": number, "skip": number, "limit": 3}


def hash_bytes(fields: dict[str, bytes]) -> int:
    """The bytes a list hash holds, as its bound counts them: field names and values."""
    return sum(len(name.encode()) + len(value) for name, value in fields.items())
