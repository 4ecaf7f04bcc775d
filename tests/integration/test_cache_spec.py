"""The design document's examples, run as written against the app's `cache` on Redis, and its Redis settings.

The same API on each backend is in test_cache_backends.py; the cache without a server in tests/unit/test_cache.py.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from app.core.cache import cache
from app.core.config import Settings
from tests.cache_helpers import assert_ttl, requests_count, seed_list_field
from tests.conftest import MakeCache, make_settings


async def redis_json(client: Redis, key: str) -> Any:
    raw = await client.get(key)
    assert raw is not None, f"{key} is not stored"
    return json.loads(raw)


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


async def test_spec_configuration_with_redis_host_and_port_uses_redis(
    settings: Settings, redis_client: Redis, make_cache: MakeCache
) -> None:
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
    instance = make_cache(configured)
    await redis_client.delete("user:41")
    stored = await instance.cache_user(41, {"id": 41, "email": "h@example.com"})
    backend = instance.backend.name

    assert backend == "redis"
    assert stored is True
    assert await redis_json(redis_client, "user:41") == {"id": 41, "email": "h@example.com"}
    await redis_client.delete("user:41")
