"""The cache without a server: how it is built and configured, the in-process backend's budget, and a Redis that
nothing answers on. Its contract on both backends is tests/integration/test_cache_backends.py."""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
from typing import Any

import pytest

from app.core.cache import Cache, CacheNotConfigured, Kind, MemoryBackend, RedisCache, cache, dumps
from tests.cache_helpers import CONTACT, FULL_USER, page_of, requests_count, seed_list_field
from tests.conftest import MakeCache, make_settings
from tests.servers import free_port


def unreachable_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


# -- building and configuring ------------------------------------------------------------------------------------


def test_redis_cache_is_the_documented_name_of_the_cache_class() -> None:
    assert RedisCache is Cache
    assert isinstance(cache, RedisCache)


async def test_an_unconfigured_cache_refuses_to_be_used_instead_of_reading_the_environment() -> None:
    unconfigured = Cache()

    async def load() -> dict[str, Any]:
        return CONTACT

    with pytest.raises(CacheNotConfigured):
        await unconfigured.cache_user(7, FULL_USER)
    with pytest.raises(CacheNotConfigured):
        await unconfigured.get_cached_contact(3, 7)
    with pytest.raises(CacheNotConfigured):
        await unconfigured.read_through(Kind.contact, "contact:3:user:7", load, 60)
    with pytest.raises(CacheNotConfigured):
        await unconfigured.invalidate("user:7")
    with pytest.raises(CacheNotConfigured):
        await unconfigured.ping()
    with pytest.raises(CacheNotConfigured):
        unconfigured.user_key(7)
    await unconfigured.close()  # closing what was never opened is fine


def test_a_backend_without_settings_is_refused() -> None:
    with pytest.raises(CacheNotConfigured):
        Cache(backend=MemoryBackend())


def test_key_prefix_is_empty_by_default() -> None:
    assert make_settings().cache_key_prefix == ""


async def test_settings_without_redis_use_the_in_process_backend(make_cache: MakeCache) -> None:
    instance = make_cache(make_settings(redis_url=None))

    stored = await instance.cache_contact(1, 2, CONTACT)
    cached = await instance.get_cached_contact(1, 2)

    assert instance.backend.name == "memory"
    assert stored is True
    assert cached == CONTACT


async def test_backend_given_to_the_constructor_keeps_the_values(make_cache: MakeCache) -> None:
    backend = MemoryBackend()
    instance = make_cache(make_settings(redis_url=None), backend)

    stored = await instance.cache_contact(3, 7, CONTACT)
    cached = await instance.get_cached_contact(3, 7)
    (raw,) = await backend.get([("contact:3:user:7", None)])

    assert stored is True
    assert raw is not None
    assert json.loads(raw) == CONTACT
    assert cached == CONTACT


async def test_a_backend_given_to_the_constructor_is_used(make_cache: MakeCache) -> None:
    """`Cache(settings, backend)` must keep that backend; the first guarded call must not swap it for one built
    from the settings (which name a Redis here)."""
    mine = MemoryBackend()
    instance = make_cache(make_settings(redis_url=unreachable_redis()), mine)

    await instance.invalidate(instance.contact_key(1, 1))  # any guarded call

    assert instance.backend is mine


async def test_the_in_process_backend_stays_within_its_byte_budget(make_cache: MakeCache) -> None:
    budget = 300_000
    instance = make_cache(make_settings(redis_url=None, cache_memory_max_bytes=budget))
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

    assert wrong == 0
    assert used <= budget
    assert budget // 2 < held <= budget, f"the backend held {held} bytes"


# -- a Redis that nothing answers on -------------------------------------------------------------------------------


async def test_spec_cache_health_example_reports_unavailable_with_redis_down(
    capsys: pytest.CaptureFixture[str],
) -> None:
    down = RedisCache(make_settings(redis_url=unreachable_redis()))
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


async def _every_method(instance: Cache) -> dict[str, Any]:
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


async def test_connection_errors_return_none_or_false_instead_of_raising(make_cache: MakeCache) -> None:
    instance = make_cache(make_settings(redis_url=unreachable_redis()))
    errors = requests_count("user", "error") + requests_count("user", "bypass")

    async with asyncio.timeout(5):
        results = await _every_method(instance)
        # Twice: the second pass runs with the circuit breaker open.
        results_again = await _every_method(instance)

    assert results == UNAVAILABLE
    assert results_again == UNAVAILABLE
    assert requests_count("user", "error") + requests_count("user", "bypass") - errors == 2


async def test_unreachable_redis_reads_fall_back_to_the_loader(make_cache: MakeCache) -> None:
    instance = make_cache(make_settings(redis_url=unreachable_redis()))
    loads = 0

    async def load() -> dict[str, Any]:
        nonlocal loads
        loads += 1
        return CONTACT

    first = await instance.read_through(Kind.contact, instance.contact_key(3, 7), load, 1800)
    second = await instance.read_through(Kind.contact, instance.contact_key(3, 7), load, 1800)
    prefetched = await instance.prefetch([(instance.user_key(7), None)])

    assert first is not None
    assert json.loads(first) == CONTACT
    assert second is not None
    assert json.loads(second) == CONTACT
    assert loads == 2
    assert prefetched is None
