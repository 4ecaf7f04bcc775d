"""The cache seen through the HTTP API: read-through fills, invalidation after every write, never stale data,
the hot path's cost (no SQL, one Redis round trip), metrics, health, and values the API must not trust."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import service as contacts_service
from app.contacts.models import Contact
from app.contacts.schemas import ContactUpdate
from app.core import db as core_db
from app.core.cache import REDIS_ROUNDTRIPS, USER_CACHE_FIELDS, MemoryBackend, cache
from app.core.config import Settings
from app.core.db import Database, commit, query_counter
from app.users import service as users_service
from app.users.models import Role, User
from tests.cache_helpers import about, requests_count, text
from tests.conftest import MakeCache, make_settings
from tests.factories import auth_headers, make_contact, make_user
from tests.servers import free_port

API = "/api/v1"


async def cache_keys(redis_client: Redis) -> set[str]:
    """Every key in the test Redis database except the rate limiter's."""
    return {text(key) for key in await redis_client.keys("*") if "LIMITS" not in text(key)}


async def stored_json(redis_client: Redis, key: str) -> Any:
    raw = await redis_client.get(key)
    assert raw is not None, f"{key} is not cached"
    return json.loads(raw)


async def list_fields(redis_client: Redis, user_id: int) -> dict[str, Any]:
    return {
        text(field): json.loads(value) for field, value in (await redis_client.hgetall(f"contacts:{user_id}")).items()
    }


# -- read-through -------------------------------------------------------------------------------------------------


async def test_read_contact_fills_contact_key_with_the_response(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, redis_client: Redis
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Ada", birthday=date(1990, 12, 10))

    response = await client.get(f"{API}/contacts/{contact.id}", headers=auth_headers(settings, user))

    assert response.status_code == 200
    key = f"contact:{contact.id}:user:{user.id}"
    assert await stored_json(redis_client, key) == response.json()
    assert response.json()["first_name"] == "Ada"
    assert about(1800, await redis_client.ttl(key))
    assert await cache_keys(redis_client) == {key, f"user:{user.id}"}


async def test_read_me_fills_user_key_without_secrets(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, redis_client: Redis
) -> None:
    user = await make_user(db, settings)

    response = await client.get(f"{API}/users/me", headers=auth_headers(settings, user))

    assert response.status_code == 200
    raw = await redis_client.get(f"user:{user.id}")
    assert raw is not None
    assert user.hashed_password.encode() not in raw
    cached = json.loads(raw)
    assert "hashed_password" not in cached
    assert set(cached) <= USER_CACHE_FIELDS
    assert {name: cached[name] for name in response.json()} == response.json()
    assert cached["token_version"] == user.token_version
    assert about(3600, await redis_client.ttl(f"user:{user.id}"))


async def test_list_search_and_birthdays_fill_fields_of_one_contacts_hash(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, redis_client: Redis
) -> None:
    user = await make_user(db, settings)
    today = datetime.now(UTC).date()
    await make_contact(db, user, first_name="Ada", birthday=date(2000, today.month, today.day))
    for _ in range(3):
        await make_contact(db, user)
    headers = auth_headers(settings, user)

    responses = [
        await client.get(f"{API}/contacts", params={"skip": 0, "limit": 2}, headers=headers),
        await client.get(f"{API}/contacts", params={"skip": 2, "limit": 2}, headers=headers),
        await client.get(f"{API}/contacts", params={"q": "ada"}, headers=headers),
        await client.get(f"{API}/contacts/birthdays", headers=headers),
    ]

    assert [r.status_code for r in responses] == [200] * 4
    bodies = [r.json() for r in responses]
    assert [len(b["items"]) for b in bodies] == [2, 2, 1, 1]
    fields = await list_fields(redis_client, user.id)
    assert len(fields) == 4
    assert sorted(fields.values(), key=json.dumps) == sorted(bodies, key=json.dumps)
    assert about(1800, await redis_client.ttl(f"contacts:{user.id}"))
    assert {key for key in await cache_keys(redis_client) if key.startswith("contacts")} == {f"contacts:{user.id}"}


async def test_pages_served_from_the_list_cache_are_right_and_query_nothing(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await make_user(db, settings)
    ids = [(await make_contact(db, user, first_name=f"Name{n}")).id for n in range(5)]
    other = await make_user(db, settings)
    await make_contact(db, other, first_name="Name9")
    headers = auth_headers(settings, user)
    queries: list[dict[str, str | int]] = [
        {"skip": 0, "limit": 2},
        {"skip": 2, "limit": 2},
        {"skip": 4, "limit": 2},
        {"q": "name3"},
    ]
    for params in queries:
        await client.get(f"{API}/contacts", params=params, headers=headers)

    before = query_counter.value
    pages = [(await client.get(f"{API}/contacts", params=params, headers=headers)).json() for params in queries]

    assert query_counter.value - before == 0
    assert [[item["id"] for item in page["items"]] for page in pages] == [ids[0:2], ids[2:4], ids[4:], [ids[3]]]
    assert [page["total"] for page in pages] == [5, 5, 5, 1]
    assert [(page["skip"], page["limit"]) for page in pages] == [(0, 2), (2, 2), (4, 2), (0, 20)]


# -- invalidation after writes ----------------------------------------------------------------------------------


async def test_create_contact_invalidates_lists_and_the_next_page_counts_it(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, redis_client: Redis
) -> None:
    user = await make_user(db, settings)
    first = await make_contact(db, user)
    headers = auth_headers(settings, user)
    assert (await client.get(f"{API}/contacts", headers=headers)).json()["total"] == 1
    assert await redis_client.exists(f"contacts:{user.id}") == 1

    created = await client.post(f"{API}/contacts", json={"first_name": "Linus"}, headers=headers)

    assert created.status_code == 201
    assert await redis_client.exists(f"contacts:{user.id}") == 0
    page = (await client.get(f"{API}/contacts", headers=headers)).json()
    assert page["total"] == 2
    assert [item["id"] for item in page["items"]] == [first.id, created.json()["id"]]
    read = await client.get(f"{API}/contacts/{created.json()['id']}", headers=headers)
    assert read.json() == created.json()


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_update_contact_invalidates_it_and_the_next_reads_are_fresh(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, redis_client: Redis, method: str
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Oldname")
    other = await make_contact(db, user, first_name="Other")
    headers = auth_headers(settings, user)
    await client.get(f"{API}/contacts/{contact.id}", headers=headers)
    await client.get(f"{API}/contacts/{other.id}", headers=headers)
    await client.get(f"{API}/contacts", headers=headers)
    await client.get(f"{API}/contacts", params={"q": "oldname"}, headers=headers)
    contact_key = f"contact:{contact.id}:user:{user.id}"
    assert await redis_client.exists(contact_key, f"contacts:{user.id}") == 2

    updated = await client.request(
        method, f"{API}/contacts/{contact.id}", json={"first_name": "Newname"}, headers=headers
    )

    assert updated.status_code == 200
    assert updated.json()["first_name"] == "Newname"
    assert await redis_client.exists(contact_key) == 0
    assert await redis_client.exists(f"contacts:{user.id}") == 0
    assert await redis_client.exists(f"contact:{other.id}:user:{user.id}") == 1  # only what changed goes
    read = await client.get(f"{API}/contacts/{contact.id}", headers=headers)
    assert read.json() == updated.json()
    assert await stored_json(redis_client, contact_key) == updated.json()
    listed = (await client.get(f"{API}/contacts", headers=headers)).json()
    assert [item["first_name"] for item in listed["items"]] == ["Newname", "Other"]
    assert (await client.get(f"{API}/contacts", params={"q": "oldname"}, headers=headers)).json()["total"] == 0
    assert (await client.get(f"{API}/contacts", params={"q": "newname"}, headers=headers)).json()["total"] == 1


async def test_delete_contact_invalidates_it_and_the_lists(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, redis_client: Redis
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user)
    kept = await make_contact(db, user)
    headers = auth_headers(settings, user)
    await client.get(f"{API}/contacts/{contact.id}", headers=headers)
    await client.get(f"{API}/contacts", headers=headers)
    contact_key = f"contact:{contact.id}:user:{user.id}"

    deleted = await client.delete(f"{API}/contacts/{contact.id}", headers=headers)

    assert deleted.status_code == 204
    assert await redis_client.exists(contact_key, f"contacts:{user.id}") == 0
    assert (await client.get(f"{API}/contacts/{contact.id}", headers=headers)).status_code == 404
    assert await redis_client.exists(contact_key) == 0  # no lease or value is left behind by the 404
    page = (await client.get(f"{API}/contacts", headers=headers)).json()
    assert page["total"] == 1
    assert [item["id"] for item in page["items"]] == [kept.id]


async def test_failed_write_leaves_the_cache_alone(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, redis_client: Redis
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user, email="a@example.com")
    await make_contact(db, user, email="b@example.com")
    headers = auth_headers(settings, user)
    cached = (await client.get(f"{API}/contacts/{contact.id}", headers=headers)).json()

    conflict = await client.patch(f"{API}/contacts/{contact.id}", json={"email": "b@example.com"}, headers=headers)

    assert conflict.status_code == 409
    assert await stored_json(redis_client, f"contact:{contact.id}:user:{user.id}") == cached
    assert (await client.get(f"{API}/contacts/{contact.id}", headers=headers)).json()["email"] == "a@example.com"


@pytest.mark.parametrize("write", ["create", "update", "delete"])
async def test_contact_writes_invalidate_only_after_the_commit(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    write: str,
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Before")
    headers = auth_headers(settings, user)
    seen: list[list[tuple[int, str]]] = []
    invalidate = cache.invalidate

    async def invalidate_and_look(*keys: str) -> bool:
        # What another connection sees when the invalidation runs: only committed rows.
        async with database.sessionmaker() as other:
            # Live contacts: a deleted one is in the trash (issue 11), its row still there.
            live = select(Contact.id, Contact.first_name).where(
                Contact.user_id == user.id, Contact.deleted_at.is_(None)
            )
            rows = (await other.execute(live)).all()
        seen.append(sorted((row[0], row[1]) for row in rows))
        return await invalidate(*keys)

    monkeypatch.setattr(cache, "invalidate", invalidate_and_look)
    if write == "create":
        response = await client.post(f"{API}/contacts", json={"first_name": "After"}, headers=headers)
        expected = sorted([(contact.id, "Before"), (response.json()["id"], "After")])
    elif write == "update":
        response = await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": "After"}, headers=headers)
        expected = [(contact.id, "After")]
    else:
        response = await client.delete(f"{API}/contacts/{contact.id}", headers=headers)
        expected = []

    assert response.status_code in (200, 201, 204)
    assert seen == [expected]


async def test_fill_from_a_read_that_raced_a_write_is_refused(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, redis_client: Redis, database: Database
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Before")
    headers = auth_headers(settings, user)
    key = f"contact:{contact.id}:user:{user.id}"
    writes = 0

    async def write_between_read_and_fill(filled_key: str) -> None:
        nonlocal writes
        if filled_key == key and writes == 0:
            writes += 1
            async with database.sessionmaker() as session:
                await contacts_service.update_contact(
                    session, contact.id, user.id, ContactUpdate(first_name="After"), partial=True
                )
                await commit(session)

    cache.before_fill = write_between_read_and_fill
    racing = await client.get(f"{API}/contacts/{contact.id}", headers=headers)

    assert writes == 1
    assert racing.json()["first_name"] == "Before"  # it read before the write: fine to answer, not to cache
    assert await redis_client.get(key) is None
    fresh = await client.get(f"{API}/contacts/{contact.id}", headers=headers)
    assert fresh.json()["first_name"] == "After"
    assert (await stored_json(redis_client, key))["first_name"] == "After"


@pytest.mark.parametrize(
    ("changes", "status_with_new_token"),
    [
        ({"role": Role.admin}, 200),
        ({"is_active": False}, 403),
        ({"hashed_password": "$argon2id$v=19$m=1024,t=1,p=1$bmV3c2FsdA$changed"}, 200),
    ],
    ids=["role", "is_active", "hashed_password"],
)
async def test_user_change_invalidates_the_user_key(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    redis_client: Redis,
    changes: dict[str, Any],
    status_with_new_token: int,
) -> None:
    user = await make_user(db, settings)
    old_headers = auth_headers(settings, user)
    assert (await client.get(f"{API}/users/me", headers=old_headers)).status_code == 200
    assert await redis_client.exists(f"user:{user.id}") == 1

    await users_service.update_user(db, user, **changes)
    assert await redis_client.exists(f"user:{user.id}") == 1  # not before the commit
    await core_db.commit(db)

    assert await redis_client.exists(f"user:{user.id}") == 0
    assert (await client.get(f"{API}/users/me", headers=old_headers)).status_code == 401
    fresh = await client.get(f"{API}/users/me", headers=auth_headers(settings, user))
    assert fresh.status_code == status_with_new_token
    cached = await stored_json(redis_client, f"user:{user.id}")
    assert cached["token_version"] == user.token_version
    assert cached["role"] == str(user.role)
    assert cached["is_active"] == user.is_active
    if fresh.status_code == 200:
        assert fresh.json()["role"] == str(user.role)


async def test_admin_role_change_invalidates_after_the_commit(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    redis_client: Redis,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = await make_user(db, settings, role=Role.admin)
    user = await make_user(db, settings)
    await client.get(f"{API}/users/me", headers=auth_headers(settings, user))
    seen: list[str] = []
    invalidate = cache.invalidate

    async def invalidate_and_look(*keys: str) -> bool:
        async with database.sessionmaker() as other:
            seen.append(str(await other.scalar(select(User.role).where(User.id == user.id))))
        return await invalidate(*keys)

    monkeypatch.setattr(cache, "invalidate", invalidate_and_look)
    response = await client.patch(
        f"{API}/admin/users/{user.id}", json={"role": "admin"}, headers=auth_headers(settings, admin)
    )

    assert response.status_code == 200
    assert seen == ["admin"]
    assert await redis_client.exists(f"user:{user.id}") == 0


async def test_admin_delete_user_invalidates_every_key_of_theirs(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, redis_client: Redis
) -> None:
    admin = await make_user(db, settings, role=Role.admin)
    user = await make_user(db, settings)
    contacts = [await make_contact(db, user) for _ in range(2)]
    headers = auth_headers(settings, user)
    for contact in contacts:
        await client.get(f"{API}/contacts/{contact.id}", headers=headers)
    await client.get(f"{API}/contacts", headers=headers)
    await client.get(f"{API}/users/me", headers=auth_headers(settings, admin))
    theirs = {f"user:{user.id}", f"contacts:{user.id}"} | {f"contact:{c.id}:user:{user.id}" for c in contacts}
    assert theirs <= await cache_keys(redis_client)

    response = await client.delete(f"{API}/admin/users/{user.id}", headers=auth_headers(settings, admin))

    assert response.status_code == 204
    assert await cache_keys(redis_client) == {f"user:{admin.id}"}
    assert (await client.get(f"{API}/users/me", headers=headers)).status_code == 401


# -- the hot path ------------------------------------------------------------------------------------------------


async def test_warm_contact_read_makes_no_query_and_one_redis_round_trip(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user)
    headers = auth_headers(settings, user)
    cold = await client.get(f"{API}/contacts/{contact.id}", headers=headers)
    queries, trips = query_counter.value, REDIS_ROUNDTRIPS._value.get()
    sample = REGISTRY.get_sample_value("contacts_api_redis_roundtrips_total") or 0.0

    warm = await client.get(f"{API}/contacts/{contact.id}", headers=headers)

    assert warm.status_code == 200
    assert warm.json() == cold.json()
    assert query_counter.value - queries == 0
    assert REDIS_ROUNDTRIPS._value.get() - trips == 1
    assert (REGISTRY.get_sample_value("contacts_api_redis_roundtrips_total") or 0.0) - sample == 1


async def test_warm_me_read_makes_no_query_and_one_redis_round_trip(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    user = await make_user(db, settings)
    headers = auth_headers(settings, user)
    cold = await client.get(f"{API}/users/me", headers=headers)
    queries, trips = query_counter.value, REDIS_ROUNDTRIPS._value.get()

    warm = await client.get(f"{API}/users/me", headers=headers)

    assert warm.status_code == 200
    assert warm.json() == cold.json()
    assert query_counter.value - queries == 0
    assert REDIS_ROUNDTRIPS._value.get() - trips == 1


async def test_values_cached_through_the_documented_api_serve_the_hot_path(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, redis_client: Redis
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Documented")
    user_data = users_service.auth_user(user).model_dump(mode="json") | {"hashed_password": user.hashed_password}
    assert await cache.cache_user(user.id, user_data) is True
    assert await cache.cache_contact(contact.id, user.id, contacts_service.contact_json(contact)) is True
    queries, trips = query_counter.value, REDIS_ROUNDTRIPS._value.get()

    response = await client.get(f"{API}/contacts/{contact.id}", headers=auth_headers(settings, user))

    assert response.status_code == 200
    assert response.json() == contacts_service.contact_json(contact)
    assert query_counter.value - queries == 0
    assert REDIS_ROUNDTRIPS._value.get() - trips == 1
    cached_user = await redis_client.get(f"user:{user.id}")
    assert cached_user is not None
    assert b"hashed_password" not in cached_user
    assert user.hashed_password.encode() not in cached_user


async def test_services_named_in_the_spec_read_through_the_cache(
    db: AsyncSession, settings: Settings, redis_client: Redis
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Spec")
    contact_id, user_id, skip, limit = contact.id, user.id, 0, 10

    # These functions use caching internally
    contact_data = await contacts_service.get_contact_with_cache(db, contact_id, user_id)
    contacts = await contacts_service.get_contacts_with_cache(db, user_id, skip, limit)
    # Cached user retrieval
    cached_user = await users_service.get_user_by_id_with_cache(db, user_id)

    assert contact_data == contacts_service.contact_json(contact)
    assert contacts == {"items": [contact_data], "total": 1, "skip": 0, "limit": 10, "next_cursor": None}
    assert cached_user is not None
    assert cached_user.email == user.email
    assert await stored_json(redis_client, f"contact:{contact_id}:user:{user_id}") == contact_data
    assert list((await list_fields(redis_client, user_id)).values()) == [contacts]
    assert (await stored_json(redis_client, f"user:{user_id}"))["id"] == user_id
    queries = query_counter.value
    assert await contacts_service.get_contact_with_cache(db, contact_id, user_id) == contact_data
    assert await contacts_service.get_contacts_with_cache(db, user_id, skip, limit) == contacts
    assert query_counter.value - queries == 0


async def test_foreign_contact_is_404_and_caches_nothing_for_the_caller(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, redis_client: Redis
) -> None:
    owner = await make_user(db, settings)
    intruder = await make_user(db, settings)
    contact = await make_contact(db, owner)
    await client.get(f"{API}/contacts/{contact.id}", headers=auth_headers(settings, owner))

    response = await client.get(f"{API}/contacts/{contact.id}", headers=auth_headers(settings, intruder))

    assert response.status_code == 404
    assert await redis_client.exists(f"contact:{contact.id}:user:{intruder.id}") == 0
    assert await redis_client.exists(f"contact:{contact.id}:user:{owner.id}") == 1


# -- configuration, outage, disabled -----------------------------------------------------------------------------


async def test_key_prefix_applies_to_read_through_and_invalidation(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    redis_client: Redis,
    reconfigure: Callable[..., Settings],
) -> None:
    reconfigure(cache_key_prefix="blue:")
    user = await make_user(db, settings)
    contact = await make_contact(db, user)
    headers = auth_headers(settings, user)
    await client.get(f"{API}/contacts/{contact.id}", headers=headers)
    await client.get(f"{API}/contacts", headers=headers)
    assert await cache_keys(redis_client) == {
        f"blue:user:{user.id}",
        f"blue:contact:{contact.id}:user:{user.id}",
        f"blue:contacts:{user.id}",
    }

    await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": "Renamed"}, headers=headers)

    assert await cache_keys(redis_client) == {f"blue:user:{user.id}"}


async def test_configured_ttls_apply_to_read_through_keys(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    redis_client: Redis,
    reconfigure: Callable[..., Settings],
) -> None:
    reconfigure(cache_user_ttl=300, cache_contact_ttl=200, cache_contacts_list_ttl=100)
    user = await make_user(db, settings)
    contact = await make_contact(db, user)
    headers = auth_headers(settings, user)

    await client.get(f"{API}/contacts/{contact.id}", headers=headers)
    await client.get(f"{API}/contacts", headers=headers)

    assert about(300, await redis_client.ttl(f"user:{user.id}"))
    assert about(200, await redis_client.ttl(f"contact:{contact.id}:user:{user.id}"))
    assert about(100, await redis_client.ttl(f"contacts:{user.id}"))


async def test_api_answers_from_the_database_while_redis_is_down(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, reconfigure: Callable[..., Settings]
) -> None:
    reconfigure(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Offline")
    headers = auth_headers(settings, user)
    errors = requests_count("user", "error") + requests_count("user", "bypass")

    read = await client.get(f"{API}/contacts/{contact.id}", headers=headers)
    updated = await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": "Stillworks"}, headers=headers)
    listed = await client.get(f"{API}/contacts", headers=headers)
    health = await client.get("/health")

    assert (read.status_code, read.json()["first_name"]) == (200, "Offline")
    assert (updated.status_code, updated.json()["first_name"]) == (200, "Stillworks")
    assert [item["first_name"] for item in listed.json()["items"]] == ["Stillworks"]
    assert requests_count("user", "error") + requests_count("user", "bypass") - errors == 3
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["cache"] == {"backend": "redis", "ok": False}


async def test_disabled_cache_reads_are_bypasses_and_nothing_is_written(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    redis_client: Redis,
    reconfigure: Callable[..., Settings],
) -> None:
    reconfigure(cache_enabled=False)
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Uncached")
    headers = auth_headers(settings, user)
    before = {kind: requests_count(kind, "bypass") for kind in ("user", "contact", "contacts_list")}

    for _ in range(2):
        read = await client.get(f"{API}/contacts/{contact.id}", headers=headers)
        listed = await client.get(f"{API}/contacts", headers=headers)
    me = await client.get(f"{API}/users/me", headers=headers)

    assert read.json()["first_name"] == "Uncached"
    assert listed.json()["total"] == 1
    assert me.json()["id"] == user.id
    assert await cache_keys(redis_client) == set()
    assert {kind: requests_count(kind, "bypass") - count for kind, count in before.items()} == {
        "user": 5,
        "contact": 2,
        "contacts_list": 2,
    }


# -- values the API must not trust -------------------------------------------------------------------------------


def _contact_cases() -> list[Any]:
    def partial(data: dict[str, Any], user_id: int) -> dict[str, Any]:
        return {"id": data["id"], "first_name": "Injected", "user_id": user_id}

    def other_user(data: dict[str, Any], user_id: int) -> dict[str, Any]:
        return data | {"user_id": user_id + 1000, "first_name": "Injected"}

    def other_id(data: dict[str, Any], user_id: int) -> dict[str, Any]:
        return data | {"id": data["id"] + 1000, "first_name": "Injected"}

    def null_first_name(data: dict[str, Any], user_id: int) -> dict[str, Any]:
        return data | {"first_name": None, "email": "Injected"}

    return [
        pytest.param(partial, id="partial-dict"),
        pytest.param(other_user, id="another-user_id"),
        pytest.param(other_id, id="another-id"),
        pytest.param(null_first_name, id="null-first_name"),
    ]


@pytest.mark.parametrize("corrupt", _contact_cases())
async def test_invalid_cached_contact_is_never_served(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    corrupt: Callable[[dict[str, Any], int], dict[str, Any]],
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Real")
    truth = contacts_service.contact_json(contact)
    assert await cache.cache_contact(contact.id, user.id, corrupt(truth, user.id)) is True

    response = await client.get(f"{API}/contacts/{contact.id}", headers=auth_headers(settings, user))

    assert response.status_code == 200
    assert response.json() == truth


def _user_cases() -> list[Any]:
    def health_probe(data: dict[str, Any]) -> dict[str, Any]:
        return {"test": "data"}

    def spec_example(data: dict[str, Any]) -> dict[str, Any]:
        return {"id": data["id"], "email": "user@example.com", "is_active": True, "is_verified": True, "role": "user"}

    def other_id(data: dict[str, Any]) -> dict[str, Any]:
        return data | {"id": data["id"] + 1000, "email": "someone.else@example.com"}

    return [
        pytest.param(health_probe, id="spec-health-probe"),
        pytest.param(spec_example, id="spec-partial-user"),
        pytest.param(other_id, id="another-id"),
    ]


@pytest.mark.parametrize("corrupt", _user_cases())
async def test_invalid_cached_user_is_never_served(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    corrupt: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    user = await make_user(db, settings)
    truth = users_service.auth_user(user).model_dump(mode="json")
    assert await cache.cache_user(user.id, corrupt(truth)) is True

    me = await client.get(f"{API}/users/me", headers=auth_headers(settings, user))

    assert me.status_code == 200
    assert me.json() == {name: truth[name] for name in me.json()}
    assert me.json()["id"] == user.id
    assert me.json()["email"] == user.email


# -- ops ----------------------------------------------------------------------------------------------------------


def _scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_expose_cache_results_and_hit_ratio(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, make_cache: MakeCache
) -> None:
    user = await make_user(db, settings)
    contact = await make_contact(db, user)
    headers = auth_headers(settings, user)
    before = _scrape((await client.get("/metrics")).text)
    for _ in range(2):
        await client.get(f"{API}/contacts/{contact.id}", headers=headers)
    down = make_cache(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", database_url=settings.database_url))
    disabled = make_cache(
        make_settings(database_url=settings.database_url, cache_enabled=False), backend=MemoryBackend()
    )
    await down.get_cached_contact(contact.id, user.id)
    await disabled.get_cached_contact(contact.id, user.id)

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = _scrape(response.text)

    def delta(kind: str, result: str) -> float:
        key = ("contacts_api_cache_requests_total", (("kind", kind), ("result", result)))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert {result: delta("contact", result) for result in ("hit", "miss", "error", "bypass")} == {
        "hit": 1,
        "miss": 1,
        "error": 1,
        "bypass": 1,
    }
    assert (delta("user", "hit"), delta("user", "miss")) == (1, 1)
    for kind in ("user", "contact"):
        hits = after[("contacts_api_cache_requests_total", (("kind", kind), ("result", "hit")))]
        misses = after[("contacts_api_cache_requests_total", (("kind", kind), ("result", "miss")))]
        ratio = after[("contacts_api_cache_hit_ratio", (("kind", kind),))]
        assert ratio == pytest.approx(hits / (hits + misses), abs=1e-6)


async def test_the_app_serves_the_process_cache_from_app_state(client: httpx.AsyncClient, app: Any) -> None:
    response = await client.get("/health")

    assert app.state.cache is cache  # the object the services import, configured by the lifespan
    assert response.json()["cache"] == {"backend": cache.backend.name, "ok": True}


async def test_health_reports_the_redis_backend_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")

    assert response.status_code == 200
    assert response.json()["cache"] == {"backend": "redis", "ok": True}
    assert response.json()["status"] == "ok"


# -- bounds ---------------------------------------------------------------------------------------------------------


async def test_deep_pages_and_later_pages_of_a_search_are_served_from_the_database_uncached(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, redis_client: Redis
) -> None:
    user = await make_user(db, settings)
    ids = [(await make_contact(db, user, first_name=f"Name{n}")).id for n in range(3)]
    headers = auth_headers(settings, user)
    deep_skip = contacts_service.CACHED_SKIP_LIMIT

    deep = await client.get(f"{API}/contacts", params={"skip": deep_skip, "limit": 5}, headers=headers)
    deep_birthdays = await client.get(f"{API}/contacts/birthdays", params={"skip": deep_skip}, headers=headers)
    second_of_search = await client.get(f"{API}/contacts", params={"q": "name", "skip": 1, "limit": 1}, headers=headers)
    last_cached = await client.get(f"{API}/contacts", params={"skip": deep_skip - 1, "limit": 5}, headers=headers)
    first_of_search = await client.get(f"{API}/contacts", params={"q": "name", "limit": 1}, headers=headers)

    assert deep.json() == {"items": [], "total": 3, "skip": deep_skip, "limit": 5, "next_cursor": None}
    assert (deep_birthdays.json()["items"], deep_birthdays.json()["skip"]) == ([], deep_skip)
    assert [item["id"] for item in second_of_search.json()["items"]] == [ids[1]]
    assert second_of_search.json()["total"] == 3
    assert [item["id"] for item in first_of_search.json()["items"]] == [ids[0]]
    fields = await list_fields(redis_client, user.id)
    assert fields == {f"list:{deep_skip - 1}:5:": last_cached.json(), "list:0:1:name": first_of_search.json()}


async def test_a_cached_user_without_default_region_is_read_again_from_the_database(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, redis_client: Redis
) -> None:
    """A `user:{id}` value written before `default_region` was cached (an older release) is not shown as if the
    user had none: it fails validation and the database answers."""
    user = await make_user(db, settings)
    await users_service.update_user(db, user, default_region="FR")
    await core_db.commit(db)
    headers = auth_headers(settings, user)
    assert (await client.get(f"{API}/users/me", headers=headers)).json()["default_region"] == "FR"
    cached = await stored_json(redis_client, f"user:{user.id}")
    assert cached["default_region"] == "FR"
    del cached["default_region"]
    await redis_client.set(f"user:{user.id}", json.dumps(cached))

    response = await client.get(f"{API}/users/me", headers=headers)

    assert response.status_code == 200
    assert response.json()["default_region"] == "FR"
