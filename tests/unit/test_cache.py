"""The cache's documented contract (shared/spec/caching-with-redis.md and the issue), on Redis and in process.

Each contract test runs on both backends: the Redis one (checked through a client of its own, so what is stored
is read independently of the cache) and the in-process MemoryBackend (checked through the backend's own reads).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from app.core.cache import (
    REDIS_ROUNDTRIPS,
    USER_CACHE_FIELDS,
    Kind,
    LeaseState,
    ListBound,
    MemoryBackend,
    RedisCache,
    cache,
    dumps,
)
from app.core.config import Settings
from tests.conftest import make_settings
from tests.servers import free_port

SECRET_HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$secret-hash-value"
SECRET_PASSWORD = "hunter2-plaintext"
SECRET_TOKEN = "eyJhbGciOiJIUzI1NiJ9.secret-token-value"

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


def requests_count(kind: str, result: str) -> float:
    return REGISTRY.get_sample_value("contacts_api_cache_requests_total", {"kind": kind, "result": result}) or 0.0


def roundtrips() -> float:
    return float(REDIS_ROUNDTRIPS._value.get())


async def redis_json(client: Redis, key: str) -> Any:
    raw = await client.get(key)
    assert raw is not None, f"{key} is not stored"
    return json.loads(raw)


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


@dataclass
class Store:
    """Reads what a backend holds, without going through the cache's own read path."""

    cache: RedisCache
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
            return {name.decode(): value for name, value in (await self.redis.hgetall(key)).items()}
        backend = self.cache.backend
        assert isinstance(backend, MemoryBackend)
        return backend.hash_fields(key)


MakeCache = Callable[..., tuple[RedisCache, Store]]


@pytest.fixture(params=["redis", "memory"])
async def make_cache(
    request: pytest.FixtureRequest, settings: Settings, redis_client: Redis
) -> AsyncIterator[MakeCache]:
    """Builds a RedisCache on the parametrized backend from settings overrides; closes them all afterwards."""
    await redis_client.flushdb()
    made: list[RedisCache] = []

    def build(**overrides: Any) -> tuple[RedisCache, Store]:
        if request.param == "redis":
            instance = RedisCache(
                make_settings(database_url=settings.database_url, redis_url=settings.redis_url, **overrides)
            )
            store = Store(instance, redis_client)
        else:
            instance = RedisCache()
            memory_settings = make_settings(database_url=settings.database_url, redis_url=None, **overrides)
            instance.configure(memory_settings, backend=MemoryBackend())
            store = Store(instance, None)
        made.append(instance)
        return instance, store

    yield build
    for instance in made:
        await instance.close()
    await redis_client.flushdb()


def assert_ttl(observed: float | None, expected: int) -> None:
    assert observed is not None, "the key has no expiry"
    assert expected - 3 <= observed <= expected, f"TTL {observed}, expected about {expected}"


async def seed_list_field(instance: RedisCache, user_id: int, hash_field: str, page: dict[str, Any]) -> bytes | None:
    async def load() -> dict[str, Any]:
        return page

    return await instance.read_through(
        Kind.contacts_list, instance.contacts_key(user_id), load, instance.settings.cache_contacts_list_ttl, hash_field
    )


# -- the spec's examples, run as written against the app's `cache` ---------------------------------------------


async def test_spec_cache_manager_example_caches_reads_and_invalidates_a_user(clean: None, redis_client: Redis) -> None:
    user_id = 1
    user_data = {"id": 1, "email": "user@example.com", "is_active": True, "is_verified": True, "role": "user"}

    # Cache user data
    stored = await cache.cache_user(user_id, user_data, ttl=3600)

    # Get cached user
    cached_user = await cache.get_cached_user(user_id)
    raw_before = await redis_client.get("user:1")

    # Invalidate cache
    invalidated = await cache.invalidate_user_cache(user_id)

    assert stored is True
    assert cached_user == user_data
    assert raw_before is not None
    assert json.loads(raw_before) == user_data
    assert invalidated is True
    assert await redis_client.exists("user:1") == 0
    assert await cache.get_cached_user(user_id) is None


async def test_spec_caching_user_data_example_stores_json_for_an_hour(clean: None, redis_client: Redis) -> None:
    # Cache user data (sensitive data filtered automatically)
    user_data = {"id": 1, "email": "user@example.com", "is_active": True, "is_verified": True, "role": "user"}
    result = await cache.cache_user(1, user_data, ttl=3600)

    # Retrieve cached user
    cached_user = await cache.get_cached_user(1)

    assert result is True
    assert cached_user == user_data
    assert await redis_json(redis_client, "user:1") == user_data
    assert_ttl(await redis_client.ttl("user:1"), 3600)


async def test_spec_caching_contacts_example_stores_json_for_half_an_hour(clean: None, redis_client: Redis) -> None:
    # Cache individual contact
    contact_data = {"id": 1, "first_name": "John", "last_name": "Doe", "email": "john@example.com", "user_id": 1}
    result = await cache.cache_contact(1, 1, contact_data, ttl=1800)

    # Get cached contact
    cached_contact = await cache.get_cached_contact(1, 1)

    assert result is True
    assert cached_contact == contact_data
    assert await redis_json(redis_client, "contact:1:user:1") == contact_data
    assert_ttl(await redis_client.ttl("contact:1:user:1"), 1800)


async def test_spec_cache_invalidation_example_deletes_contact_list_and_user_keys(
    clean: None, redis_client: Redis
) -> None:
    contact_id, user_id = 4, 9
    await cache.cache_user(user_id, {"id": user_id, "email": "u@example.com"})
    await cache.cache_contact(contact_id, user_id, {"id": contact_id, "user_id": user_id, "first_name": "A"})
    await cache.cache_contact(5, user_id, {"id": 5, "user_id": user_id, "first_name": "B"})
    await seed_list_field(cache, user_id, "list:0:20:", {"items": [], "total": 0, "skip": 0, "limit": 20})
    assert await redis_client.exists("user:9", "contact:4:user:9", "contact:5:user:9", "contacts:9") == 4

    # Invalidate specific contact cache
    contact_result = await cache.invalidate_contact_cache(contact_id, user_id)
    after_contact = await redis_client.exists("contact:4:user:9"), await redis_client.exists("contacts:9")

    # Invalidate all user contacts
    contacts_result = await cache.invalidate_user_contacts_cache(user_id)
    after_contacts = await redis_client.exists("contacts:9")

    # Invalidate user cache
    user_result = await cache.invalidate_user_cache(user_id)

    assert (contact_result, contacts_result, user_result) == (True, True, True)
    assert after_contact == (0, 1)  # only the one contact went
    assert after_contacts == 0
    assert await redis_client.exists("user:9") == 0
    assert await redis_client.exists("contact:5:user:9") == 1  # another contact's key is untouched


async def test_spec_monitoring_example_reports_a_miss_then_a_hit(
    clean: None, capsys: pytest.CaptureFixture[str]
) -> None:
    user_id = 3
    misses, hits = requests_count("user", "miss"), requests_count("user", "hit")

    # Check if data is in cache
    cached_data = await cache.get_cached_user(user_id)
    if cached_data:
        print("Cache hit")
    else:
        print("Cache miss")

    await cache.cache_user(user_id, {"id": user_id, "email": "m@example.com"})
    cached_data = await cache.get_cached_user(user_id)
    if cached_data:
        print("Cache hit")
    else:
        print("Cache miss")

    assert capsys.readouterr().out.splitlines() == ["Cache miss", "Cache hit"]
    assert requests_count("user", "miss") - misses == 1
    assert requests_count("user", "hit") - hits == 1


async def test_spec_cache_health_example_reports_working_with_redis_up(
    clean: None, redis_client: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    # Test cache functionality
    success = await cache.cache_user(1, {"test": "data"})
    if success:
        print("Cache is working")
    else:
        print("Cache is not available")

    assert capsys.readouterr().out == "Cache is working\n"
    assert await redis_json(redis_client, "user:1") == {}  # "test" is not an allow-listed user field
    assert_ttl(await redis_client.ttl("user:1"), 3600)


async def test_spec_cache_health_example_reports_unavailable_with_redis_down(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    down = RedisCache()
    down.configure(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", database_url=settings.database_url))
    try:
        # Test cache functionality
        success = await down.cache_user(1, {"test": "data"})
        if success:
            print("Cache is working")
        else:
            print("Cache is not available")
    finally:
        await down.close()

    assert success is False
    assert capsys.readouterr().out == "Cache is not available\n"


async def test_spec_configuration_with_redis_host_and_port_uses_redis(settings: Settings, redis_client: Redis) -> None:
    assert settings.redis_url is not None
    url = urlsplit(settings.redis_url)
    db_index = int(url.path.strip("/") or 0)
    configured = make_settings(
        database_url=settings.database_url,
        redis_host=url.hostname,
        redis_port=url.port or 6379,
        redis_db=db_index,
        **({"redis_password": url.password} if url.password else {}),
    )
    instance = RedisCache()
    instance.configure(configured)
    await redis_client.delete("user:41")
    try:
        stored = await instance.cache_user(41, {"id": 41, "email": "h@example.com"})
        backend = instance.backend.name
    finally:
        await instance.close()

    assert backend == "redis"
    assert stored is True
    assert await redis_json(redis_client, "user:41") == {"id": 41, "email": "h@example.com"}
    await redis_client.delete("user:41")


async def test_settings_without_redis_use_the_in_process_backend(settings: Settings) -> None:
    instance = RedisCache(make_settings(database_url=settings.database_url, redis_url=None))
    try:
        stored = await instance.cache_contact(1, 2, CONTACT)
        cached = await instance.get_cached_contact(1, 2)
        name = instance.backend.name
    finally:
        await instance.close()

    assert name == "memory"
    assert stored is True
    assert cached == CONTACT


async def test_backend_given_to_the_constructor_keeps_the_values(settings: Settings) -> None:
    backend = MemoryBackend()
    instance = RedisCache(make_settings(database_url=settings.database_url, redis_url=None), backend=backend)
    try:
        stored = await instance.cache_contact(3, 7, CONTACT)
        cached = await instance.get_cached_contact(3, 7)
        (raw,) = await backend.get([("contact:3:user:7", None)])
    finally:
        await instance.close()

    assert stored is True
    assert raw is not None
    assert json.loads(raw) == CONTACT
    assert cached == CONTACT


# -- keys ------------------------------------------------------------------------------------------------------


async def test_values_land_under_the_documented_keys(make_cache: MakeCache) -> None:
    instance, store = make_cache()

    assert await instance.cache_user(7, FULL_USER) is True
    assert await instance.cache_contact(3, 7, CONTACT) is True
    assert await seed_list_field(instance, 7, "list:0:20:", {"items": [CONTACT], "total": 1}) is not None

    assert (instance.user_key(7), instance.contact_key(3, 7), instance.contacts_key(7)) == (
        "user:7",
        "contact:3:user:7",
        "contacts:7",
    )
    assert await store.json("user:7") == FULL_USER
    assert await store.json("contact:3:user:7") == CONTACT
    assert json.loads(await store.field("contacts:7", "list:0:20:") or b"null") == {"items": [CONTACT], "total": 1}


async def test_cache_key_prefix_goes_in_front_of_every_key(make_cache: MakeCache) -> None:
    instance, store = make_cache(cache_key_prefix="tenant1:")

    await instance.cache_user(7, FULL_USER)
    await instance.cache_contact(3, 7, CONTACT)
    await seed_list_field(instance, 7, "list:0:20:", {"items": [], "total": 0})

    assert await store.json("tenant1:user:7") == FULL_USER
    assert await store.json("tenant1:contact:3:user:7") == CONTACT
    assert await store.field("tenant1:contacts:7", "list:0:20:") is not None
    assert await store.raw("user:7") is None
    assert await store.raw("contact:3:user:7") is None
    assert await instance.get_cached_contact(3, 7) == CONTACT

    assert await instance.invalidate_user_contacts_cache(7) is True
    assert await instance.invalidate_contact_cache(3, 7) is True
    assert await instance.invalidate_user_cache(7) is True
    assert await store.field("tenant1:contacts:7", "list:0:20:") is None
    assert await store.raw("tenant1:contact:3:user:7") is None
    assert await store.raw("tenant1:user:7") is None


async def test_key_prefix_is_empty_by_default() -> None:
    assert make_settings().cache_key_prefix == ""


async def test_cached_contact_is_only_visible_under_its_own_user(make_cache: MakeCache) -> None:
    instance, store = make_cache()

    await instance.cache_contact(3, 7, CONTACT)

    assert await instance.get_cached_contact(3, 8) is None
    assert await store.raw("contact:3:user:8") is None
    assert await instance.get_cached_contact(3, 7) == CONTACT


# -- values: JSON, allow-listed -------------------------------------------------------------------------------


async def test_values_are_json_not_pickle(make_cache: MakeCache) -> None:
    instance, store = make_cache()
    contact = dict(CONTACT, birthday=date(1906, 12, 9), created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))

    assert await instance.cache_contact(3, 7, contact) is True

    raw = await store.raw("contact:3:user:7")
    assert raw is not None
    assert not raw.startswith(b"\x80")  # the pickle protocol marker
    decoded = json.loads(raw.decode("utf-8"))
    assert decoded["birthday"] == "1906-12-09"
    assert decoded["created_at"] == "2026-01-02T03:04:05+00:00"
    assert await instance.get_cached_contact(3, 7) == decoded


async def test_cache_user_never_stores_passwords_or_tokens(make_cache: MakeCache) -> None:
    instance, store = make_cache()
    user_data = dict(
        FULL_USER,
        hashed_password=SECRET_HASH,
        password=SECRET_PASSWORD,
        access_token=SECRET_TOKEN,
        refresh_token=SECRET_TOKEN + "-refresh",
        token=SECRET_TOKEN + "-plain",
    )

    assert await instance.cache_user(7, user_data) is True

    raw = await store.raw("user:7")
    assert raw is not None
    for secret in (SECRET_HASH, SECRET_PASSWORD, SECRET_TOKEN):
        assert secret.encode() not in raw
    stored = json.loads(raw)
    assert not {"hashed_password", "password", "access_token", "refresh_token", "token"} & stored.keys()
    assert stored == FULL_USER  # every allow-listed field is kept
    assert set(stored) == USER_CACHE_FIELDS
    assert await instance.get_cached_user(7) == FULL_USER


# -- TTLs -----------------------------------------------------------------------------------------------------


async def test_default_ttls_are_an_hour_for_users_and_half_an_hour_for_contacts_and_lists(
    make_cache: MakeCache,
) -> None:
    instance, store = make_cache()

    await instance.cache_user(7, FULL_USER)
    await instance.cache_contact(3, 7, CONTACT)
    await seed_list_field(instance, 7, "list:0:20:", {"items": [], "total": 0})

    assert_ttl(await store.ttl("user:7"), 3600)
    assert_ttl(await store.ttl("contact:3:user:7"), 1800)
    assert_ttl(await store.ttl("contacts:7"), 1800)


async def test_configured_ttls_apply_when_no_ttl_is_given(make_cache: MakeCache) -> None:
    instance, store = make_cache(cache_user_ttl=120, cache_contact_ttl=90, cache_contacts_list_ttl=60)

    await instance.cache_user(7, FULL_USER)
    await instance.cache_contact(3, 7, CONTACT)
    await seed_list_field(instance, 7, "list:0:20:", {"items": [], "total": 0})

    assert_ttl(await store.ttl("user:7"), 120)
    assert_ttl(await store.ttl("contact:3:user:7"), 90)
    assert_ttl(await store.ttl("contacts:7"), 60)


async def test_explicit_ttl_overrides_the_configured_one(make_cache: MakeCache) -> None:
    instance, store = make_cache()

    await instance.cache_user(7, FULL_USER, ttl=45)
    await instance.cache_contact(3, 7, CONTACT, ttl=30)

    assert_ttl(await store.ttl("user:7"), 45)
    assert_ttl(await store.ttl("contact:3:user:7"), 30)


async def test_values_expire_after_their_ttl(make_cache: MakeCache) -> None:
    instance, store = make_cache()

    await instance.cache_user(7, FULL_USER, ttl=1)
    await instance.cache_contact(3, 7, CONTACT, ttl=1)
    assert await instance.get_cached_user(7) == FULL_USER
    await asyncio.sleep(1.1)

    assert await instance.get_cached_user(7) is None
    assert await instance.get_cached_contact(3, 7) is None
    assert await store.raw("user:7") is None


# -- reads and invalidation ------------------------------------------------------------------------------------


async def test_reads_of_missing_keys_return_none_and_count_misses(make_cache: MakeCache) -> None:
    instance, _ = make_cache()
    user_misses, contact_misses = requests_count("user", "miss"), requests_count("contact", "miss")

    assert await instance.get_cached_user(7) is None
    assert await instance.get_cached_contact(3, 7) is None

    assert requests_count("user", "miss") - user_misses == 1
    assert requests_count("contact", "miss") - contact_misses == 1


async def test_reads_of_cached_values_return_them_and_count_hits(make_cache: MakeCache) -> None:
    instance, _ = make_cache()
    await instance.cache_user(7, FULL_USER)
    await instance.cache_contact(3, 7, CONTACT)
    user_hits, contact_hits = requests_count("user", "hit"), requests_count("contact", "hit")

    assert await instance.get_cached_user(7) == FULL_USER
    assert await instance.get_cached_contact(3, 7) == CONTACT

    assert requests_count("user", "hit") - user_hits == 1
    assert requests_count("contact", "hit") - contact_hits == 1


async def test_invalidate_contact_deletes_only_that_contact(make_cache: MakeCache) -> None:
    instance, store = make_cache()
    await instance.cache_user(7, FULL_USER)
    await instance.cache_contact(3, 7, CONTACT)
    await instance.cache_contact(4, 7, dict(CONTACT, id=4))

    assert await instance.invalidate_contact_cache(3, 7) is True

    assert await store.raw("contact:3:user:7") is None
    assert await instance.get_cached_contact(3, 7) is None
    assert await store.json("contact:4:user:7") == dict(CONTACT, id=4)
    assert await store.json("user:7") == FULL_USER


async def test_invalidate_user_deletes_the_user_key(make_cache: MakeCache) -> None:
    instance, store = make_cache()
    await instance.cache_user(7, FULL_USER)
    await instance.cache_user(8, dict(FULL_USER, id=8))

    assert await instance.invalidate_user_cache(7) is True

    assert await store.raw("user:7") is None
    assert await instance.get_cached_user(7) is None
    assert await store.json("user:8") == dict(FULL_USER, id=8)


async def test_invalidating_a_missing_key_succeeds(make_cache: MakeCache) -> None:
    instance, store = make_cache()

    assert await instance.invalidate_user_cache(7) is True
    assert await instance.invalidate_contact_cache(3, 7) is True
    assert await instance.invalidate_user_contacts_cache(7) is True
    assert await store.raw("user:7") is None


async def test_invalidate_user_contacts_drops_every_cached_query_in_one_delete(make_cache: MakeCache) -> None:
    instance, store = make_cache()
    fields = ["list:0:20:", "list:20:20:", "list:0:20:ada", "birthdays:2026-03-01:7:0:20"]
    for number, hash_field in enumerate(fields):
        await seed_list_field(instance, 7, hash_field, {"items": [], "total": number})
    await seed_list_field(instance, 8, "list:0:20:", {"items": [], "total": 99})
    for number, hash_field in enumerate(fields):
        assert json.loads(await store.field("contacts:7", hash_field) or b"null")["total"] == number
    before = roundtrips()

    assert await instance.invalidate_user_contacts_cache(7) is True

    assert roundtrips() - before == 1
    for hash_field in fields:
        assert await store.field("contacts:7", hash_field) is None
    assert await store.field("contacts:8", "list:0:20:") is not None  # another user's lists stay


# -- bounds ----------------------------------------------------------------------------------------------------


def page_of(number: int) -> dict[str, Any]:
    """A list page of about 1 KB; `number` tells pages apart."""
    return {"items": [CONTACT, CONTACT, CONTACT], "total": number, "skip": number, "limit": 3}


def hash_bytes(fields: dict[str, bytes]) -> int:
    return sum(len(name.encode()) + len(value) for name, value in fields.items())


@pytest.mark.parametrize(("max_fields", "max_bytes"), [(50, 10_000_000), (10_000, 40_000)], ids=["fields", "bytes"])
async def test_a_thousand_distinct_queries_cannot_grow_a_list_hash_past_its_bound(
    make_cache: MakeCache, max_fields: int, max_bytes: int
) -> None:
    instance, store = make_cache(cache_list_max_fields=max_fields, cache_list_max_bytes=max_bytes)

    served = [await seed_list_field(instance, 7, f"list:{n}:3:", page_of(n)) for n in range(1000)]

    assert [json.loads(raw or b"null") for raw in served] == [page_of(n) for n in range(1000)]
    fields = await store.hash(instance.contacts_key(7))
    assert len(fields) <= max_fields
    assert hash_bytes(fields) <= max_bytes
    one_page = len("list:999:3:") + len(dumps(page_of(999)))
    assert len(fields) == max_fields or hash_bytes(fields) > max_bytes - one_page, "not filled up to the bound"
    assert not [name for name, value in fields.items() if value.startswith(b'{"__')], "a lease was left behind"


async def test_a_full_list_hash_keeps_its_pages_and_serves_new_queries_from_the_loader(make_cache: MakeCache) -> None:
    instance, store = make_cache(cache_list_max_fields=3)
    key = instance.contacts_key(7)
    for number in range(3):
        await seed_list_field(instance, 7, f"list:{number}:3:", page_of(number))
    loads: list[str] = []

    def loader(name: str, number: int) -> Callable[[], Any]:
        async def load() -> dict[str, Any]:
            loads.append(name)
            return page_of(number)

        return load

    new = [await instance.read_through(Kind.contacts_list, key, loader("new", 99), 60, "list:99:3:") for _ in range(2)]
    old = await instance.read_through(Kind.contacts_list, key, loader("old", 0), 60, "list:0:3:")

    assert [json.loads(raw or b"null") for raw in new] == [page_of(99), page_of(99)]
    assert json.loads(old or b"null") == page_of(0)
    assert loads == ["new", "new"]  # the new query from the loader each time, the cached page from the cache
    assert set(await store.hash(key)) == {"list:0:3:", "list:1:3:", "list:2:3:"}
    # A write's invalidation empties the hash: new pages are cached again.
    assert await instance.invalidate_user_contacts_cache(7) is True
    await instance.read_through(Kind.contacts_list, key, loader("new", 99), 60, "list:99:3:")
    assert await store.hash(key) == {"list:99:3:": dumps(page_of(99))}


async def test_leases_count_against_the_field_bound_and_a_fill_past_the_byte_bound_drops_its_lease(
    make_cache: MakeCache,
) -> None:
    instance, store = make_cache()
    backend = instance.backend
    key = instance.contacts_key(7)
    bound = ListBound(fields=2, bytes=2_000)

    first = await backend.get_or_lease(key, "list:0:3:", "t1", 2000, 60, bound)
    second = await backend.get_or_lease(key, "list:3:3:", "t2", 2000, 60, bound)
    third = await backend.get_or_lease(key, "list:6:3:", "t3", 2000, 60, bound)
    same = await backend.get_or_lease(key, "list:0:3:", "t4", 2000, 60, bound)
    too_big = await backend.fill(key, "list:0:3:", "t1", b"[" + b"1," * 1_000 + b"1]", 60, bound)
    fits = await backend.fill(key, "list:3:3:", "t2", b"[1]", 60, bound)
    after = await backend.get_or_lease(key, "list:0:3:", "t5", 2000, 60, bound)

    assert [first[0], second[0], third[0], same[0]] == [
        LeaseState.granted,
        LeaseState.granted,
        LeaseState.full,
        LeaseState.held,
    ]
    assert (too_big, fits) == (False, True)
    assert after[0] is LeaseState.granted  # the refused fill took its lease away: nobody waits for it
    fields = await store.hash(key)
    assert set(fields) == {"list:0:3:", "list:3:3:"}
    assert fields["list:3:3:"] == b"[1]"
    assert hash_bytes(fields) <= bound.bytes


async def test_the_in_process_backend_stays_within_its_byte_budget(settings: Settings) -> None:
    budget = 300_000
    instance = RedisCache(
        make_settings(database_url=settings.database_url, redis_url=None, cache_memory_max_bytes=budget)
    )
    backend = instance.backend
    assert isinstance(backend, MemoryBackend)
    gc.collect()
    tracemalloc.start()
    try:
        wrong = 0  # compared at once: keeping what was served would keep the values alive
        for user in range(500):  # about 5.5 MB of pages, 18 times the budget
            for n in range(10):
                wrong += await seed_list_field(instance, user, f"list:{n}:3:", page_of(n)) != dumps(page_of(n))
            await instance.cache_contact(user, user, CONTACT)
        gc.collect()
        used = backend.used_bytes
        held = tracemalloc.get_traced_memory()[0]
        await backend.close()  # what this frees is what the backend held
        gc.collect()
        held -= tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        await instance.close()

    assert wrong == 0
    assert used <= budget
    assert budget // 2 < held <= budget, f"the backend held {held} bytes"


# -- failures --------------------------------------------------------------------------------------------------


async def _every_method(instance: RedisCache) -> dict[str, Any]:
    return {
        "cache_user": await instance.cache_user(7, FULL_USER),
        "get_cached_user": await instance.get_cached_user(7),
        "invalidate_user_cache": await instance.invalidate_user_cache(7),
        "cache_contact": await instance.cache_contact(3, 7, CONTACT),
        "get_cached_contact": await instance.get_cached_contact(3, 7),
        "invalidate_contact_cache": await instance.invalidate_contact_cache(3, 7),
        "invalidate_user_contacts_cache": await instance.invalidate_user_contacts_cache(7),
    }


UNAVAILABLE = {
    "cache_user": False,
    "get_cached_user": None,
    "invalidate_user_cache": False,
    "cache_contact": False,
    "get_cached_contact": None,
    "invalidate_contact_cache": False,
    "invalidate_user_contacts_cache": False,
}


async def test_connection_errors_return_none_or_false_instead_of_raising(settings: Settings) -> None:
    instance = RedisCache()
    instance.configure(
        make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", database_url=settings.database_url)
    )
    errors = requests_count("user", "error") + requests_count("user", "bypass")
    try:
        async with asyncio.timeout(5):
            results = await _every_method(instance)
            # Twice: the second pass runs with the circuit breaker open.
            results_again = await _every_method(instance)
    finally:
        await instance.close()

    assert results == UNAVAILABLE
    assert results_again == UNAVAILABLE
    assert requests_count("user", "error") + requests_count("user", "bypass") - errors == 2


async def test_unreachable_redis_reads_fall_back_to_the_loader(settings: Settings) -> None:
    instance = RedisCache()
    instance.configure(
        make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", database_url=settings.database_url)
    )
    loads = 0

    async def load() -> dict[str, Any]:
        nonlocal loads
        loads += 1
        return CONTACT

    try:
        first = await instance.read_through(Kind.contact, instance.contact_key(3, 7), load, 1800)
        second = await instance.read_through(Kind.contact, instance.contact_key(3, 7), load, 1800)
        prefetched = await instance.prefetch([(instance.user_key(7), None)])
    finally:
        await instance.close()

    assert first is not None
    assert json.loads(first) == CONTACT
    assert second is not None
    assert json.loads(second) == CONTACT
    assert loads == 2
    assert prefetched is None


@pytest.mark.parametrize("bad_value", [{"a", "set"}, object(), b"bytes"], ids=["set", "object", "bytes"])
async def test_unserializable_contact_is_logged_and_not_cached(
    make_cache: MakeCache, caplog: pytest.LogCaptureFixture, bad_value: Any
) -> None:
    instance, store = make_cache()
    caplog.set_level(logging.ERROR, logger="app.core.cache")

    result = await instance.cache_contact(3, 7, dict(CONTACT, notes=bad_value))

    assert result is False
    assert await store.raw("contact:3:user:7") is None
    assert any(
        record.levelno >= logging.ERROR
        and record.name == "app.core.cache"
        and "contact:3:user:7" in record.getMessage()
        for record in caplog.records
    ), caplog.text


async def test_unserializable_user_field_is_logged_and_not_cached(
    make_cache: MakeCache, caplog: pytest.LogCaptureFixture
) -> None:
    instance, store = make_cache()
    caplog.set_level(logging.ERROR, logger="app.core.cache")

    result = await instance.cache_user(7, dict(FULL_USER, email={"not", "a", "string"}))

    assert result is False
    assert await store.raw("user:7") is None
    assert any(record.name == "app.core.cache" and "user:7" in record.getMessage() for record in caplog.records)


async def test_unserializable_value_leaves_the_cache_working(make_cache: MakeCache) -> None:
    instance, store = make_cache()

    assert await instance.cache_contact(3, 7, dict(CONTACT, notes={1, 2})) is False
    assert await instance.cache_contact(3, 7, CONTACT) is True

    assert await store.json("contact:3:user:7") == CONTACT


# -- disabled --------------------------------------------------------------------------------------------------


async def test_disabled_cache_stores_nothing_and_reads_are_bypasses(make_cache: MakeCache) -> None:
    instance, store = make_cache(cache_enabled=False)
    bypasses = requests_count("user", "bypass"), requests_count("contact", "bypass")

    assert await instance.cache_user(7, FULL_USER) is False
    assert await instance.cache_contact(3, 7, CONTACT) is False
    assert await instance.get_cached_user(7) is None
    assert await instance.get_cached_contact(3, 7) is None

    assert await store.raw("user:7") is None
    assert await store.raw("contact:3:user:7") is None
    assert requests_count("user", "bypass") - bypasses[0] == 1
    assert requests_count("contact", "bypass") - bypasses[1] == 1
