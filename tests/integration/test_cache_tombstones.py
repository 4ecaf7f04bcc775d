"""A write tombstones its keys before its commit: if Redis fails after the commit, before the deletion, no
process serves the old value (the tombstone stands in its place until the retried deletion or its TTL)."""

from __future__ import annotations

import json

from app.contacts import repository
from app.contacts.service import contact_json
from app.core.cache import Kind, cache
from tests.conftest import make_settings
from tests.factories import auth_headers, make_contact, make_user

API = "/api/v1"


async def test_write_whose_deletion_fails_after_commit_leaves_no_stale_value_for_other_processes(
    client, db, settings, database, redis_client, monkeypatch, make_cache
):
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Before")
    headers = auth_headers(settings, user)
    key = cache.contact_key(contact.id, user.id)
    assert (await client.get(f"{API}/contacts/{contact.id}", headers=headers)).json()["first_name"] == "Before"
    assert json.loads(await redis_client.get(key))["first_name"] == "Before"

    async def redis_fails_after_commit(*keys: str) -> bool:
        return False  # as if Redis went away between the commit and the deletion

    monkeypatch.setattr(cache, "invalidate", redis_fails_after_commit)
    response = await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": "After"}, headers=headers)
    assert response.status_code == 200
    assert (await redis_client.get(key)).startswith(b'{"__tomb__"')
    assert 0 < await redis_client.pttl(key) <= settings.cache_tombstone_ttl * 1000

    other_process = make_cache(make_settings(database_url=settings.database_url, redis_url=settings.redis_url))
    async with database.sessionmaker() as session:

        async def load():
            row = await repository.get_row(session, contact.id, user.id)
            return contact_json(row) if row else None

        raw = await other_process.read_through(Kind.contact, key, load, 60)
    assert json.loads(raw)["first_name"] == "After"
    assert await other_process.get_cached_contact(contact.id, user.id) is None
    # The tombstone is not replaced by a fill: it waits for the retried deletion (or its TTL).
    assert (await redis_client.get(key)).startswith(b'{"__tomb__"')


async def test_tombstone_on_a_list_hash_drops_every_page_and_blocks_fills(client, db, settings, redis_client):
    user = await make_user(db, settings)
    await make_contact(db, user)
    headers = auth_headers(settings, user)
    await client.get(f"{API}/contacts?limit=5", headers=headers)
    await client.get(f"{API}/contacts?q=first", headers=headers)
    list_key = cache.contacts_key(user.id)
    assert len(await redis_client.hkeys(list_key)) == 2

    assert await cache.tombstone(list_key) is True
    assert await redis_client.hkeys(list_key) == [b"__tomb__"]
    page = await client.get(f"{API}/contacts?limit=5", headers=headers)
    assert page.status_code == 200
    assert page.json()["total"] == 1
    assert await redis_client.hkeys(list_key) == [b"__tomb__"]  # served from the database, not filled
