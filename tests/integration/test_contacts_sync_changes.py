"""The change feed through HTTP: order, one entry per contact, tokens bound to their user, 410 below the kept
history, the empty poll answered by the cache, and no change skipped when transactions overlap."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.contacts import changes as changes_module
from app.contacts.models import ContactCount, ContactTombstone
from app.contacts.trash import clean_up
from app.core.db import query_counter, utcnow
from tests.factories import auth_headers, make_user
from tests.sync_helpers import API, Replica, book, held_commits


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings)


@pytest.fixture
def headers(settings, owner):
    return auth_headers(settings, owner)


async def create(client, headers, first_name: str, **fields) -> dict:
    response = await client.post(f"{API}/contacts", json={"first_name": first_name, **fields}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def feed(client, headers, since: str | None = None, limit: int = 100):
    params: dict = {"limit": limit}
    if since is not None:
        params["since"] = since
    return await client.get(f"{API}/contacts/changes", params=params, headers=headers)


async def test_without_since_every_live_contact_comes_as_an_upsert_page_by_page(client, headers, db, owner):
    made = [await create(client, headers, f"C{n}") for n in range(5)]
    assert (await client.delete(f"{API}/contacts/{made[1]['id']}", headers=headers)).status_code == 204

    replica = Replica(client, headers, limit=2)
    first = await replica.poll()
    assert [c["op"] for c in first] == ["upsert", "upsert"]
    assert replica.has_more
    await replica.drain()

    assert replica.contacts == await book(db, owner.id)
    assert sorted(replica.contacts) == sorted(c["id"] for c in made if c is not made[1])
    assert replica.pages == 3


async def test_changes_come_in_order_each_contact_once_in_its_latest_state(client, headers, db, owner):
    ada, bob = await create(client, headers, "Ada"), await create(client, headers, "Bob")
    token = (await feed(client, headers)).json()["next_token"]

    await client.patch(f"{API}/contacts/{ada['id']}", json={"last_name": "Lovelace"}, headers=headers)
    assert (await client.delete(f"{API}/contacts/{bob['id']}", headers=headers)).status_code == 204
    cyd = await create(client, headers, "Cyd")
    await client.patch(f"{API}/contacts/{ada['id']}", json={"nickname": "Countess"}, headers=headers)

    body = (await feed(client, headers, token)).json()
    assert [(c["id"], c["op"]) for c in body["changes"]] == [
        (bob["id"], "delete"),
        (cyd["id"], "upsert"),
        (ada["id"], "upsert"),
    ]
    assert body["changes"][2]["contact"]["last_name"] == "Lovelace"
    assert body["changes"][2]["contact"]["nickname"] == "Countess"
    assert body["changes"][0]["uid"] == bob["uid"]
    assert body["changes"][0]["contact"] is None
    assert body["has_more"] is False

    # Restored: an upsert again, whole. Purged: a delete (from its tombstone).
    await client.post(f"{API}/contacts/{bob['id']}/restore", headers=headers)
    restored = (await feed(client, headers, body["next_token"])).json()
    assert [(c["id"], c["op"]) for c in restored["changes"]] == [(bob["id"], "upsert")]
    await client.delete(f"{API}/contacts/{bob['id']}", headers=headers)
    assert (await client.delete(f"{API}/contacts/trash/{bob['id']}", headers=headers)).status_code == 204
    purged = (await feed(client, headers, restored["next_token"])).json()
    assert [(c["id"], c["uid"], c["op"]) for c in purged["changes"]] == [(bob["id"], bob["uid"], "delete")]


async def test_a_token_of_another_user_or_a_forged_one_answers_400(client, headers, db, settings):
    await create(client, headers, "Ada")
    token = (await feed(client, headers)).json()["next_token"]
    intruder = await make_user(db, settings)

    stolen = await feed(client, auth_headers(settings, intruder), token)
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "InvalidChangeToken"
    assert stolen.json()["detail"]
    for forged in ("nonsense", token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), "A" * 43):
        response = await feed(client, headers, forged)
        assert (response.status_code, response.json()["error"]) == (400, "InvalidChangeToken"), forged
    assert (await feed(client, headers, "x" * 101)).status_code == 422


async def test_a_token_below_the_kept_history_answers_410_and_a_fresh_start_works(
    client, headers, db, owner, settings, database
):
    ada, bob = await create(client, headers, "Ada"), await create(client, headers, "Bob")
    old_token = (await feed(client, headers)).json()["next_token"]
    await client.delete(f"{API}/contacts/{ada['id']}", headers=headers)
    await client.delete(f"{API}/contacts/trash/{ada['id']}", headers=headers)
    kept = await feed(client, headers, old_token)
    assert [c["op"] for c in kept.json()["changes"]] == ["delete"]

    # The tombstone ages past SYNC_HISTORY_DAYS: the clean-up forgets it and raises the floor above old_token.
    await db.execute(
        update(ContactTombstone).values(purged_at=utcnow() - timedelta(days=settings.sync_history_days + 1))
    )
    await db.commit()
    done = await clean_up(database, settings)
    assert done.tombstones_forgotten == 1
    floor = await db.scalar(select(ContactCount.history_floor).where(ContactCount.user_id == owner.id))
    assert floor
    assert floor > 0
    await db.commit()

    expired = await feed(client, headers, old_token)
    assert expired.status_code == 410
    assert expired.json()["error"] == "ChangeTokenExpired"
    replica = Replica(client, headers)
    await replica.drain()
    assert list(replica.contacts) == [bob["id"]]
    # A token taken after the floor still works.
    assert (await feed(client, headers, replica.token)).status_code == 200


async def test_polling_with_nothing_new_makes_no_query_and_a_write_shows_at_once(client, headers):
    await create(client, headers, "Ada")
    token = (await feed(client, headers)).json()["next_token"]
    assert (await feed(client, headers, token)).json()["changes"] == []  # fills the cached head

    before = query_counter.value
    empty = await feed(client, headers, token)
    assert query_counter.value - before == 0
    assert empty.json() == {"changes": [], "next_token": token, "has_more": False}

    bob = await create(client, headers, "Bob")
    fresh = (await feed(client, headers, token)).json()
    assert [c["id"] for c in fresh["changes"]] == [bob["id"]]
    assert fresh["next_token"] != token

    # Every kind of write invalidates the cached head around its commit: the next poll shows it at once.
    writes = [
        ("delete", lambda: client.delete(f"{API}/contacts/{bob['id']}", headers=headers)),
        ("upsert", lambda: client.post(f"{API}/contacts/{bob['id']}/restore", headers=headers)),
        ("delete", lambda: client.delete(f"{API}/contacts/{bob['id']}", headers=headers)),
        ("delete", lambda: client.delete(f"{API}/contacts/trash/{bob['id']}", headers=headers)),
    ]
    token = fresh["next_token"]
    for op, write in writes:
        assert (await feed(client, headers, token)).json()["changes"] == []  # warm: the head is cached
        assert (await write()).status_code in (200, 204)
        after = (await feed(client, headers, token)).json()
        assert [(c["id"], c["op"]) for c in after["changes"]] == [(bob["id"], op)]
        token = after["next_token"]


async def test_a_change_that_commits_after_a_later_one_is_not_skipped(client, headers, db, owner, monkeypatch):
    """The classic way a change feed skips a change: T1 takes number n and is slow to commit, T2 takes n+1 and
    commits, a reader reads n+1 and moves its token past n, T1 commits n. The user's change counter is locked
    by T1 until it commits, so T2 cannot take n+1 before: the reader never sees n+1 without n."""
    ada, bob = await create(client, headers, "Ada"), await create(client, headers, "Bob")
    replica = Replica(client, headers)
    await replica.drain()

    async with held_commits(monkeypatch) as hold:
        release = await hold()
        first = asyncio.create_task(
            client.patch(f"{API}/contacts/{ada['id']}", json={"last_name": "A"}, headers=headers)
        )
        await asyncio.wait_for(release.reached.wait(), 5)  # T1: number taken, transaction open
        second = asyncio.create_task(
            client.patch(f"{API}/contacts/{bob['id']}", json={"last_name": "B"}, headers=headers)
        )
        await asyncio.sleep(0.3)  # T2 commits now unless it waits for T1
        await replica.drain()  # the reader reads in between
        release.set()
        assert (await first).status_code == 200
        assert (await second).status_code == 200
    await replica.drain()

    assert replica.contacts == await book(db, owner.id)
    assert replica.contacts[ada["id"]]["last_name"] == "A"
    assert replica.contacts[bob["id"]]["last_name"] == "B"


async def test_next_token_is_opaque_and_stable_for_its_position(settings):
    position = changes_module.Position(41, 7)
    token = changes_module.encode_token(settings, 5, position)
    assert changes_module.decode_token(settings, 5, token) == position
    with pytest.raises(changes_module.InvalidChangeToken):
        changes_module.decode_token(settings, 6, token)


async def test_a_signed_token_ahead_of_the_history_answers_410(client, headers, settings, owner):
    await create(client, headers, "Ada")
    ahead = changes_module.encode_token(settings, owner.id, changes_module.Position(10_000))

    response = await feed(client, headers, ahead)

    assert response.status_code == 410
    assert response.json()["error"] == "ChangeTokenExpired"
