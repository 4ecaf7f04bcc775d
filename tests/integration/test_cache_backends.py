"""The cache's contract, on each backend: the same cases on Redis (one server, a Redis Cluster, a Sentinel-watched
master) and on the in-process backend.

What a backend holds is read through `Store`, independently of the cache's own read path (a Redis client of its
own, or the in-process backend's reads). The design document's API, keys, TTLs, JSON and allow-list; reads and
invalidation; the list bound; leases, tombstones and the spec API's respect for both; serialisation failures; the
cache switched off; and the read-through seen through the HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import USER_CACHE_FIELDS, Cache, Kind, LeaseState, ListBound, MemoryBackend, cache, dumps
from app.core.config import Settings
from app.core.db import query_counter
from app.core.rate_limit import RateLimiter
from tests.cache_helpers import (
    CONTACT,
    FULL_USER,
    Store,
    assert_ttl,
    hash_bytes,
    page_of,
    requests_count,
    roundtrips,
    seed_list_field,
)
from tests.conftest import MakeCache, make_settings
from tests.factories import auth_headers, make_contact, make_user
from tests.topologies import Topology, topology_under_test

API = "/api/v1"
TTL = 60

SECRET_HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$secret-hash-value"
SECRET_PASSWORD = "hunter2-plaintext"
SECRET_TOKEN = "eyJhbGciOiJIUzI1NiJ9.secret-token-value"

BackendCache = Callable[..., tuple[Cache, Store]]


DOCUMENTED_KEYS = ("user:7", "contact:3:user:7", "contacts:7")


@pytest.fixture(params=["redis", "memory", "cluster", "sentinel"])
def backend_name(request: pytest.FixtureRequest) -> str:
    """One server, the in-process backend, a 3-master/3-replica Redis Cluster, a Sentinel-watched master."""
    return str(request.param)


@pytest.fixture
async def topology(
    backend_name: str, request: pytest.FixtureRequest, redis_url: str, redis_client: Redis
) -> AsyncIterator[Topology | None]:
    """The parametrized Redis topology, emptied before and after the test (None for the in-process backend)."""
    if backend_name == "memory":
        yield None
        return
    async with topology_under_test(backend_name, request, (redis_url, redis_client)) as chosen:
        await chosen.flush()
        yield chosen
        await chosen.flush()


@pytest.fixture
async def backend_cache(
    backend_name: str, settings: Settings, topology: Topology | None, make_cache: MakeCache
) -> BackendCache:
    """Builds a cache on the parametrized backend from settings overrides, with a `Store` to check it by."""

    def build(**overrides: Any) -> tuple[Cache, Store]:
        if topology is not None:
            instance = make_cache(make_settings(database_url=settings.database_url, **topology.overrides, **overrides))
            return instance, Store(instance, topology.client)
        memory_settings = make_settings(database_url=settings.database_url, redis_url=None, **overrides)
        instance = make_cache(memory_settings, MemoryBackend())
        return instance, Store(instance, None)

    return build


# -- keys ------------------------------------------------------------------------------------------------------


async def test_values_land_under_the_documented_keys(backend_cache: BackendCache, backend_name: str) -> None:
    instance, store = backend_cache()

    assert await instance.cache_user(7, FULL_USER) is True
    assert await instance.cache_contact(3, 7, CONTACT) is True
    assert await seed_list_field(instance, 7, "list:0:20:", {"items": [CONTACT], "total": 1}) is not None

    # On Redis Cluster the user's id is a hash tag: every key of one user lies in one hash slot.
    documented = ("user:{7}", "contact:3:user:{7}", "contacts:{7}") if backend_name == "cluster" else DOCUMENTED_KEYS
    assert (instance.user_key(7), instance.contact_key(3, 7), instance.contacts_key(7)) == documented
    assert await store.json(instance.user_key(7)) == FULL_USER
    assert await store.json(instance.contact_key(3, 7)) == CONTACT
    assert json.loads(await store.field(instance.contacts_key(7), "list:0:20:") or b"null") == {
        "items": [CONTACT],
        "total": 1,
    }


async def test_cache_key_prefix_goes_in_front_of_every_key(backend_cache: BackendCache) -> None:
    instance, store = backend_cache(cache_key_prefix="tenant1:")

    await instance.cache_user(7, FULL_USER)
    await instance.cache_contact(3, 7, CONTACT)
    await seed_list_field(instance, 7, "list:0:20:", {"items": [], "total": 0})

    assert instance.user_key(7).startswith("tenant1:user:")
    assert instance.contact_key(3, 7).startswith("tenant1:contact:3:user:")
    assert instance.contacts_key(7).startswith("tenant1:contacts:")
    assert await store.json(instance.user_key(7)) == FULL_USER
    assert await store.json(instance.contact_key(3, 7)) == CONTACT
    assert await store.field(instance.contacts_key(7), "list:0:20:") is not None
    assert await store.raw(instance.user_key(7).removeprefix("tenant1:")) is None
    assert await store.raw(instance.contact_key(3, 7).removeprefix("tenant1:")) is None
    assert await instance.get_cached_contact(3, 7) == CONTACT

    assert await instance.invalidate_user_contacts_cache(7) is True
    assert await instance.invalidate_contact_cache(3, 7) is True
    assert await instance.invalidate_user_cache(7) is True
    assert await store.field(instance.contacts_key(7), "list:0:20:") is None
    assert await store.raw(instance.contact_key(3, 7)) is None
    assert await store.raw(instance.user_key(7)) is None


async def test_cached_contact_is_only_visible_under_its_own_user(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()

    await instance.cache_contact(3, 7, CONTACT)

    assert await instance.get_cached_contact(3, 8) is None
    assert await store.raw(instance.contact_key(3, 8)) is None
    assert await instance.get_cached_contact(3, 7) == CONTACT


# -- values: JSON, allow-listed -------------------------------------------------------------------------------


async def test_values_are_json_not_pickle(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()
    contact = dict(CONTACT, birthday=date(1906, 12, 9), created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))

    assert await instance.cache_contact(3, 7, contact) is True

    raw = await store.raw(instance.contact_key(3, 7))
    assert raw is not None
    assert not raw.startswith(b"\x80")  # the pickle protocol marker
    decoded = json.loads(raw.decode("utf-8"))
    assert decoded["birthday"] == "1906-12-09"
    assert decoded["created_at"] == "2026-01-02T03:04:05+00:00"
    assert await instance.get_cached_contact(3, 7) == decoded


async def test_cache_user_never_stores_passwords_or_tokens(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()
    user_data = dict(
        FULL_USER,
        hashed_password=SECRET_HASH,
        password=SECRET_PASSWORD,
        access_token=SECRET_TOKEN,
        refresh_token=SECRET_TOKEN + "-refresh",
        token=SECRET_TOKEN + "-plain",
    )

    assert await instance.cache_user(7, user_data) is True

    raw = await store.raw(instance.user_key(7))
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
    backend_cache: BackendCache,
) -> None:
    instance, store = backend_cache()

    await instance.cache_user(7, FULL_USER)
    await instance.cache_contact(3, 7, CONTACT)
    await seed_list_field(instance, 7, "list:0:20:", {"items": [], "total": 0})

    assert_ttl(await store.ttl(instance.user_key(7)), 3600)
    assert_ttl(await store.ttl(instance.contact_key(3, 7)), 1800)
    assert_ttl(await store.ttl(instance.contacts_key(7)), 1800)


async def test_configured_ttls_apply_when_no_ttl_is_given(backend_cache: BackendCache) -> None:
    instance, store = backend_cache(cache_user_ttl=120, cache_contact_ttl=90, cache_contacts_list_ttl=60)

    await instance.cache_user(7, FULL_USER)
    await instance.cache_contact(3, 7, CONTACT)
    await seed_list_field(instance, 7, "list:0:20:", {"items": [], "total": 0})

    assert_ttl(await store.ttl(instance.user_key(7)), 120)
    assert_ttl(await store.ttl(instance.contact_key(3, 7)), 90)
    assert_ttl(await store.ttl(instance.contacts_key(7)), 60)


async def test_explicit_ttl_overrides_the_configured_one(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()

    await instance.cache_user(7, FULL_USER, ttl=45)
    await instance.cache_contact(3, 7, CONTACT, ttl=30)

    assert_ttl(await store.ttl(instance.user_key(7)), 45)
    assert_ttl(await store.ttl(instance.contact_key(3, 7)), 30)


async def test_values_expire_after_their_ttl(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()

    await instance.cache_user(7, FULL_USER, ttl=1)
    await instance.cache_contact(3, 7, CONTACT, ttl=1)
    assert await instance.get_cached_user(7) == FULL_USER
    await asyncio.sleep(1.1)

    assert await instance.get_cached_user(7) is None
    assert await instance.get_cached_contact(3, 7) is None
    assert await store.raw(instance.user_key(7)) is None


# -- reads and invalidation ------------------------------------------------------------------------------------


async def test_reads_of_missing_keys_return_none_and_count_misses(backend_cache: BackendCache) -> None:
    instance, _ = backend_cache()
    user_misses, contact_misses = requests_count("user", "miss"), requests_count("contact", "miss")

    assert await instance.get_cached_user(7) is None
    assert await instance.get_cached_contact(3, 7) is None

    assert requests_count("user", "miss") - user_misses == 1
    assert requests_count("contact", "miss") - contact_misses == 1


async def test_reads_of_cached_values_return_them_and_count_hits(backend_cache: BackendCache) -> None:
    instance, _ = backend_cache()
    await instance.cache_user(7, FULL_USER)
    await instance.cache_contact(3, 7, CONTACT)
    user_hits, contact_hits = requests_count("user", "hit"), requests_count("contact", "hit")

    assert await instance.get_cached_user(7) == FULL_USER
    assert await instance.get_cached_contact(3, 7) == CONTACT

    assert requests_count("user", "hit") - user_hits == 1
    assert requests_count("contact", "hit") - contact_hits == 1


async def test_invalidate_contact_deletes_only_that_contact(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()
    await instance.cache_user(7, FULL_USER)
    await instance.cache_contact(3, 7, CONTACT)
    await instance.cache_contact(4, 7, dict(CONTACT, id=4))

    assert await instance.invalidate_contact_cache(3, 7) is True

    assert await store.raw(instance.contact_key(3, 7)) is None
    assert await instance.get_cached_contact(3, 7) is None
    assert await store.json(instance.contact_key(4, 7)) == dict(CONTACT, id=4)
    assert await store.json(instance.user_key(7)) == FULL_USER


async def test_invalidate_user_deletes_the_user_key(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()
    await instance.cache_user(7, FULL_USER)
    await instance.cache_user(8, dict(FULL_USER, id=8))

    assert await instance.invalidate_user_cache(7) is True

    assert await store.raw(instance.user_key(7)) is None
    assert await instance.get_cached_user(7) is None
    assert await store.json(instance.user_key(8)) == dict(FULL_USER, id=8)


async def test_invalidating_a_missing_key_succeeds(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()

    assert await instance.invalidate_user_cache(7) is True
    assert await instance.invalidate_contact_cache(3, 7) is True
    assert await instance.invalidate_user_contacts_cache(7) is True
    assert await store.raw(instance.user_key(7)) is None


async def test_invalidate_user_contacts_drops_every_cached_query_in_one_delete(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()
    fields = ["list:0:20:", "list:20:20:", "list:0:20:ada", "birthdays:2026-03-01:7:0:20"]
    for number, hash_field in enumerate(fields):
        await seed_list_field(instance, 7, hash_field, {"items": [], "total": number})
    await seed_list_field(instance, 8, "list:0:20:", {"items": [], "total": 99})
    for number, hash_field in enumerate(fields):
        assert json.loads(await store.field(instance.contacts_key(7), hash_field) or b"null")["total"] == number
    before = roundtrips()

    assert await instance.invalidate_user_contacts_cache(7) is True

    assert roundtrips() - before == 1
    for hash_field in fields:
        assert await store.field(instance.contacts_key(7), hash_field) is None
    assert await store.field(instance.contacts_key(8), "list:0:20:") is not None  # another user's lists stay


# -- bounds ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("max_fields", "max_bytes"), [(50, 10_000_000), (10_000, 40_000)], ids=["fields", "bytes"])
async def test_a_thousand_distinct_queries_cannot_grow_a_list_hash_past_its_bound(
    backend_cache: BackendCache, max_fields: int, max_bytes: int
) -> None:
    instance, store = backend_cache(cache_list_max_fields=max_fields, cache_list_max_bytes=max_bytes)

    served = [await seed_list_field(instance, 7, f"list:{n}:3:", page_of(n)) for n in range(1000)]

    assert [json.loads(raw or b"null") for raw in served] == [page_of(n) for n in range(1000)]
    fields = await store.hash(instance.contacts_key(7))
    assert len(fields) <= max_fields
    assert hash_bytes(fields) <= max_bytes
    one_page = len("list:999:3:") + len(dumps(page_of(999)))
    assert len(fields) == max_fields or hash_bytes(fields) > max_bytes - one_page, "not filled up to the bound"
    assert not [name for name, value in fields.items() if value.startswith(b'{"__')], "a lease was left behind"


async def test_a_full_list_hash_keeps_its_pages_and_serves_new_queries_from_the_loader(
    backend_cache: BackendCache,
) -> None:
    instance, store = backend_cache(cache_list_max_fields=3)
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
    backend_cache: BackendCache,
) -> None:
    instance, store = backend_cache()
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


# -- values that cannot be serialised ----------------------------------------------------------------------


@pytest.mark.parametrize("bad_value", [{"a", "set"}, object(), b"bytes"], ids=["set", "object", "bytes"])
async def test_unserializable_contact_is_logged_and_not_cached(
    backend_cache: BackendCache, caplog: pytest.LogCaptureFixture, bad_value: Any
) -> None:
    instance, store = backend_cache()
    caplog.set_level(logging.ERROR, logger="app.core.cache")

    result = await instance.cache_contact(3, 7, dict(CONTACT, notes=bad_value))

    assert result is False
    assert await store.raw(instance.contact_key(3, 7)) is None
    assert any(
        record.levelno >= logging.ERROR
        and record.name == "app.core.cache"
        and instance.contact_key(3, 7) in record.getMessage()
        for record in caplog.records
    ), caplog.text


async def test_unserializable_user_field_is_logged_and_not_cached(
    backend_cache: BackendCache, caplog: pytest.LogCaptureFixture
) -> None:
    instance, store = backend_cache()
    caplog.set_level(logging.ERROR, logger="app.core.cache")

    result = await instance.cache_user(7, dict(FULL_USER, email={"not", "a", "string"}))

    assert result is False
    assert await store.raw(instance.user_key(7)) is None
    assert any(
        record.name == "app.core.cache" and instance.user_key(7) in record.getMessage() for record in caplog.records
    )


async def test_unserializable_value_leaves_the_cache_working(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()

    assert await instance.cache_contact(3, 7, dict(CONTACT, notes={1, 2})) is False
    assert await instance.cache_contact(3, 7, CONTACT) is True

    assert await store.json(instance.contact_key(3, 7)) == CONTACT


# -- disabled --------------------------------------------------------------------------------------------------


async def test_disabled_cache_stores_nothing_and_reads_are_bypasses(backend_cache: BackendCache) -> None:
    instance, store = backend_cache(cache_enabled=False)
    bypasses = requests_count("user", "bypass"), requests_count("contact", "bypass")

    assert await instance.cache_user(7, FULL_USER) is False
    assert await instance.cache_contact(3, 7, CONTACT) is False
    assert await instance.get_cached_user(7) is None
    assert await instance.get_cached_contact(3, 7) is None

    assert await store.raw(instance.user_key(7)) is None
    assert await store.raw(instance.contact_key(3, 7)) is None
    assert requests_count("user", "bypass") - bypasses[0] == 1
    assert requests_count("contact", "bypass") - bypasses[1] == 1


# -- leases and tombstones ---------------------------------------------------------------------------------------


async def test_a_fill_whose_lease_was_voided_by_an_invalidation_is_refused(backend_cache: BackendCache) -> None:
    instance, _ = backend_cache()
    backend = instance.backend
    key = instance.contact_key(1, 1)
    state, value = await backend.get_or_lease(key, None, "token-1", 2000, TTL)
    assert (state, value) == (LeaseState.granted, None)
    assert await instance.invalidate(key)
    assert await backend.fill(key, None, "token-1", b'{"v":1}', TTL) is False
    assert await backend.get([(key, None)]) == [None], "the refused fill stored something"
    # A reader after the invalidation gets a lease of its own (not "held"), and only its token may fill.
    state, _ = await backend.get_or_lease(key, None, "token-2", 2000, TTL)
    assert state is LeaseState.granted
    assert await backend.fill(key, None, "token-1", b'{"v":1}', TTL) is False
    assert await backend.fill(key, None, "token-2", b'{"v":2}', TTL) is True
    assert await backend.get([(key, None)]) == [b'{"v":2}']
    assert await backend.get_or_lease(key, None, "token-3", 2000, TTL) == (LeaseState.hit, b'{"v":2}')


async def test_an_expired_lease_on_a_list_field_can_be_taken_over(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()
    backend = instance.backend
    key, list_field = instance.contacts_key(1), "list:0:20:"
    assert (await backend.get_or_lease(key, list_field, "token-1", 100, TTL))[0] is LeaseState.granted
    assert (await backend.get_or_lease(key, list_field, "token-2", 100, TTL))[0] is LeaseState.held
    await asyncio.sleep(0.2)  # token-1's lease expires (its "until" is in the past)
    assert (await backend.get_or_lease(key, list_field, "token-2", 100, TTL))[0] is LeaseState.granted
    assert await backend.fill(key, list_field, "token-1", b'{"page":1}', TTL) is False
    assert await backend.fill(key, list_field, "token-2", b'{"page":2}', TTL) is True
    assert await backend.get([(key, list_field)]) == [b'{"page":2}']
    ttl = await store.ttl(key)
    assert ttl is not None
    assert 0 < ttl <= TTL


@pytest.mark.parametrize("is_hash", [False, True], ids=["string", "hash"])
async def test_a_tombstone_hides_the_value_and_refuses_fills_until_it_is_deleted(
    backend_cache: BackendCache, is_hash: bool
) -> None:
    instance, _ = backend_cache()
    backend = instance.backend
    field = "page" if is_hash else None
    if is_hash:
        await backend.get_or_lease("k", field, "t1", 1000, 60)
        assert await backend.fill("k", field, "t1", b'{"v":1}', 60)
    else:
        assert await backend.store("k", b'{"v":1}', 60)
    state, _ = await backend.get_or_lease("k", field, "t2", 1000, 60)
    assert state.name == "hit"
    await backend.tombstone([("k", is_hash)], 10_000)
    state, _ = await backend.get_or_lease("k", field, "t3", 1000, 60)
    assert state.name == "tombstoned"
    assert not await backend.fill("k", field, "t2", b'{"v":0}', 60)
    await backend.delete(["k"])
    state, _ = await backend.get_or_lease("k", field, "t4", 1000, 60)
    assert state.name == "granted"


# -- the spec's API keeps to the same rules as the read-through ----------------------------------------------------


async def test_cache_user_does_not_replace_a_writes_tombstone(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()
    key = instance.user_key(7)
    assert await instance.cache_user(7, FULL_USER) is True
    assert await instance.tombstone(key) is True  # a write of user 7 is committing

    stored = await instance.cache_user(7, dict(FULL_USER, email="before-the-write@example.com"))

    assert stored is False
    assert (await store.raw(key) or b"").startswith(b'{"__tomb__"')
    assert await instance.get_cached_user(7) is None
    # Once the write's deletion has run, the key may be cached again.
    assert await instance.invalidate(key) is True
    assert await instance.cache_user(7, FULL_USER) is True
    assert await instance.get_cached_user(7) == FULL_USER


async def test_cache_contact_does_not_replace_a_readers_live_lease(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()
    key = instance.contact_key(3, 7)
    during_the_load: list[tuple[bool, bytes | None]] = []

    async def another_caller_stores(filled_key: str) -> None:
        stored = await instance.cache_contact(3, 7, dict(CONTACT, first_name="Outsider"))
        during_the_load.append((stored, await store.raw(filled_key)))

    async def load() -> dict[str, Any]:
        return CONTACT

    instance.before_fill = another_caller_stores
    served = await instance.read_through(Kind.contact, key, load, TTL)

    assert served is not None
    assert json.loads(served) == CONTACT
    ((stored, held),) = during_the_load
    assert stored is False
    assert held is not None
    assert held.startswith(b'{"__lease__"'), "the reader's lease was replaced"
    assert await store.json(key) == CONTACT  # the reader's fill went through
    assert await instance.get_cached_contact(3, 7) == CONTACT


async def test_cache_user_replaces_a_cached_value(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()

    assert await instance.cache_user(7, FULL_USER) is True
    assert await instance.cache_user(7, dict(FULL_USER, role="admin")) is True

    assert (await store.json(instance.user_key(7)))["role"] == "admin"


async def test_lookups_never_return_a_lease_or_a_tombstone(backend_cache: BackendCache) -> None:
    instance, store = backend_cache()
    user_key, contact_key = instance.user_key(7), instance.contact_key(3, 7)
    state, _ = await instance.backend.get_or_lease(user_key, None, "reader", 2000, TTL)
    assert state is LeaseState.granted
    assert await instance.cache_contact(3, 7, CONTACT) is True
    assert await instance.tombstone(contact_key) is True
    assert (await store.raw(user_key) or b"").startswith(b'{"__lease__"')
    assert (await store.raw(contact_key) or b"").startswith(b'{"__tomb__"')
    misses = requests_count("user", "miss"), requests_count("contact", "miss")

    assert await instance.get_cached_user(7) is None
    assert await instance.get_cached_contact(3, 7) is None

    assert requests_count("user", "miss") - misses[0] == 1
    assert requests_count("contact", "miss") - misses[1] == 1


async def test_a_value_stored_by_cache_contact_is_a_read_through_hit(backend_cache: BackendCache) -> None:
    instance, _ = backend_cache()
    loads = 0

    async def load() -> dict[str, Any]:
        nonlocal loads
        loads += 1
        return dict(CONTACT, first_name="From the database")

    assert await instance.cache_contact(3, 7, CONTACT) is True
    served = await instance.read_through(Kind.contact, instance.contact_key(3, 7), load, TTL)

    assert served is not None
    assert json.loads(served) == CONTACT
    assert loads == 0


# -- the read-through seen through the HTTP API --------------------------------------------------------------------


async def test_read_through_and_invalidation_behave_alike_on_both_backends(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    reconfigure: Callable[..., Settings],
    backend_name: str,
    topology: Topology | None,
) -> None:
    if backend_name == "memory":
        reconfigure(backend=MemoryBackend(), redis_url=None)
    elif topology is not None:
        reconfigure(**topology.overrides)
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Same")
    headers = auth_headers(settings, user)
    key = cache.contact_key(contact.id, user.id)

    first = await client.get(f"{API}/contacts/{contact.id}", headers=headers)
    (cached,) = await cache.backend.get([(key, None)])
    queries = query_counter.value
    second = await client.get(f"{API}/contacts/{contact.id}", headers=headers)
    warm_queries = query_counter.value - queries
    await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": "Changed"}, headers=headers)
    (after_write,) = await cache.backend.get([(key, None)])
    third = await client.get(f"{API}/contacts/{contact.id}", headers=headers)

    assert cache.backend.name == {"cluster": "redis-cluster", "sentinel": "redis-sentinel"}.get(
        backend_name, backend_name
    )
    assert cached is not None
    assert json.loads(cached) == first.json()
    assert second.json() == first.json()
    assert warm_queries == 0
    assert after_write is None
    assert third.json()["first_name"] == "Changed"


def hammering_queries() -> list[tuple[str, dict[str, str | int]]]:
    """1,000 distinct list, search and birthday queries: each would be a field of its own in the user's hash."""
    pages: list[tuple[str, dict[str, str | int]]] = [
        ("/contacts", {"skip": skip, "limit": limit}) for skip in range(10) for limit in range(1, 81)
    ]
    searches: list[tuple[str, dict[str, str | int]]] = [("/contacts", {"q": f"absent-{n}"}) for n in range(100)]
    birthdays: list[tuple[str, dict[str, str | int]]] = [("/contacts/birthdays", {"days": n}) for n in range(100)]
    return pages + searches + birthdays


async def test_a_user_hammering_distinct_queries_cannot_grow_the_list_cache_past_its_bound(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    app: Any,
    reconfigure: Callable[..., Settings],
    topology: Topology | None,
) -> None:
    max_fields, max_bytes = 40, 30_000
    bounds = {"cache_list_max_fields": max_fields, "cache_list_max_bytes": max_bytes}
    if topology is None:
        reconfigure(backend=MemoryBackend(), redis_url=None, **bounds)
    else:
        reconfigure(**topology.overrides, **bounds)
    store = Store(cache, topology.client if topology is not None else None)
    app.state.rate_limiter = RateLimiter(
        make_settings(rate_limit_enabled=False)
    )  # the attacker's pace is not the point
    user = await make_user(db, settings)
    ids = [(await make_contact(db, user, first_name=f"Name{n}", notes="n" * 300)).id for n in range(3)]
    headers = auth_headers(settings, user)
    queries = hammering_queries()

    responses = [await client.get(f"{API}{path}", params=params, headers=headers) for path, params in queries]

    assert [r.status_code for r in responses] == [200] * len(queries)
    for (path, params), response in zip(queries, responses, strict=True):
        body = response.json()
        if path == "/contacts" and "q" not in params:
            skip, limit = int(params["skip"]), int(params["limit"])
            assert [item["id"] for item in body["items"]] == ids[skip : skip + limit], params
            assert (body["total"], body["skip"], body["limit"]) == (3, skip, limit)
        else:
            assert (body["items"], body["total"]) == ([], 0), params
    fields = await store.hash(cache.contacts_key(user.id))
    stored = sum(len(name.encode()) + len(value) for name, value in fields.items())
    assert len(fields) <= max_fields
    assert stored <= max_bytes
    assert stored > max_bytes // 2, "the cache should still be used up to its bound"
    # What was cached first stays cached and is served without a query; the rest is served from the database.
    first_path, first_params = queries[0]
    before = query_counter.value
    again = await client.get(f"{API}{first_path}", params=first_params, headers=headers)
    assert (again.status_code, again.json()) == (200, responses[0].json())
    assert query_counter.value == before
    last_path, last_params = queries[-1]
    again = await client.get(f"{API}{last_path}", params=last_params, headers=headers)
    assert (again.status_code, again.json()) == (200, responses[-1].json())
    assert query_counter.value > before
    assert await store.hash(cache.contacts_key(user.id)) == fields
