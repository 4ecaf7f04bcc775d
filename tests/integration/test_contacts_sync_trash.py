"""The trash through HTTP: listed, restored whole, purged with a tombstone; the retention clean-up; the cache."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.contacts.models import Contact, ContactCount, ContactTombstone
from app.contacts.trash import clean_up, run_clean_up_periodically
from app.core.db import utcnow
from tests.factories import auth_headers, make_user
from tests.sync_helpers import API

RICH = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "organization": "Analytical Engines",
    "emails": [{"value": "ada@example.com", "label": "work"}, {"value": "ada@home.example", "label": "home"}],
    "phones": [{"value": "+44 20 7946 0000", "label": "mobile"}],
    "labels": ["family"],
    "favorite": True,
    "notes": "first programmer",
}


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings)


@pytest.fixture
def headers(settings, owner):
    return auth_headers(settings, owner)


async def create(client, headers, body: dict) -> dict:
    response = await client.post(f"{API}/contacts", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def trash_of(client, headers, **params) -> dict:
    response = await client.get(f"{API}/contacts/trash", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def live_count(db, user_id: int) -> int:
    counted = await db.scalar(select(ContactCount.contacts).where(ContactCount.user_id == user_id))
    await db.commit()
    return int(counted or 0)


def assert_error(response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.json()["detail"]


async def test_deleted_contacts_are_listed_in_the_trash_newest_first_and_nowhere_else(client, headers):
    ada = await create(client, headers, RICH)
    bob = await create(client, headers, {"first_name": "Bob"})
    for contact in (ada, bob):
        assert (await client.delete(f"{API}/contacts/{contact['id']}", headers=headers)).status_code == 204

    page = await trash_of(client, headers)
    assert [item["id"] for item in page["items"]] == [bob["id"], ada["id"]]
    assert page["total"] == 2
    assert page["items"][1]["deleted_at"]
    assert page["items"][1]["emails"] == ada["emails"]
    assert (await client.get(f"{API}/contacts/{ada['id']}", headers=headers)).status_code == 404
    assert (await client.get(f"{API}/contacts", headers=headers)).json()["total"] == 0
    assert (await trash_of(client, headers, skip=1, limit=1))["items"][0]["id"] == ada["id"]


async def test_restore_brings_the_contact_back_whole_with_a_new_etag(client, headers, db, owner):
    ada = await create(client, headers, RICH)
    await client.delete(f"{API}/contacts/{ada['id']}", headers=headers)
    assert await live_count(db, owner.id) == 0

    response = await client.post(f"{API}/contacts/{ada['id']}/restore", headers=headers)

    assert response.status_code == 200, response.text
    restored = response.json()
    unchanged = {k: v for k, v in ada.items() if k not in ("etag", "updated_at")}
    assert {k: restored[k] for k in unchanged} == unchanged
    assert restored["etag"] != ada["etag"]
    assert (await client.get(f"{API}/contacts/{ada['id']}", headers=headers)).json() == restored
    assert (await trash_of(client, headers))["total"] == 0
    assert await live_count(db, owner.id) == 1


async def test_restore_is_not_refused_for_an_email_another_contact_took_meanwhile(client, headers, db, owner):
    ada = await create(client, headers, RICH)
    await client.delete(f"{API}/contacts/{ada['id']}", headers=headers)
    await create(client, headers, {"first_name": "Other Ada", "email": "ada@example.com"})

    response = await client.post(f"{API}/contacts/{ada['id']}/restore", headers=headers)

    assert response.status_code == 200, response.text
    listed = (await client.get(f"{API}/contacts", headers=headers)).json()
    assert listed["total"] == 2


async def test_restore_of_a_live_contact_changes_nothing_and_answers_it(client, headers):
    """A restore retried after it succeeded (or of a contact never deleted) is not an error: nothing changes."""
    live = await create(client, headers, {"first_name": "Live"})
    feed = (await client.get(f"{API}/contacts/changes", headers=headers)).json()

    response = await client.post(f"{API}/contacts/{live['id']}/restore", headers=headers)

    assert response.status_code == 200, response.text
    assert response.json() == live
    after = (await client.get(f"{API}/contacts/changes", headers=headers, params={"since": feed["next_token"]})).json()
    assert after["changes"] == []


async def test_restore_or_purge_of_a_missing_or_foreign_contact_answers_404(client, headers, db, settings):
    live = await create(client, headers, {"first_name": "Live"})
    intruder = await make_user(db, settings)
    theirs = await create(client, auth_headers(settings, intruder), {"first_name": "Theirs"})
    await client.delete(f"{API}/contacts/{theirs['id']}", headers=auth_headers(settings, intruder))

    for contact_id in (theirs["id"], 999_999):
        assert_error(
            await client.post(f"{API}/contacts/{contact_id}/restore", headers=headers), 404, "TrashedContactNotFound"
        )
    for contact_id in (theirs["id"], 999_999):
        assert_error(
            await client.delete(f"{API}/contacts/trash/{contact_id}", headers=headers), 404, "TrashedContactNotFound"
        )
    assert_error(await client.delete(f"{API}/contacts/trash/{live['id']}", headers=headers), 409, "ContactNotInTrash")

    assert (await client.get(f"{API}/contacts/{live['id']}", headers=headers)).status_code == 200
    their_trash = await trash_of(client, auth_headers(settings, intruder))
    assert [item["id"] for item in their_trash["items"]] == [theirs["id"]]


async def test_an_empty_cursor_or_token_is_the_first_page(client, headers):
    await create(client, headers, {"first_name": "Ada"})
    trashed = await create(client, headers, {"first_name": "Bob"})
    await client.delete(f"{API}/contacts/{trashed['id']}", headers=headers)

    first = (await client.get(f"{API}/contacts", headers=headers)).json()
    assert (await client.get(f"{API}/contacts", headers=headers, params={"cursor": ""})).json() == first
    trash_first = (await client.get(f"{API}/contacts/trash", headers=headers)).json()
    assert (await client.get(f"{API}/contacts/trash", headers=headers, params={"cursor": ""})).json() == trash_first
    feed = (await client.get(f"{API}/contacts/changes", headers=headers)).json()
    assert (await client.get(f"{API}/contacts/changes", headers=headers, params={"since": ""})).json() == feed
    assert [item["first_name"] for item in first["items"]] == ["Ada"]
    assert [item["first_name"] for item in trash_first["items"]] == ["Bob"]


async def test_purge_deletes_the_row_and_leaves_a_tombstone(client, headers, db, owner):
    ada = await create(client, headers, RICH)
    await client.delete(f"{API}/contacts/{ada['id']}", headers=headers)

    response = await client.delete(f"{API}/contacts/trash/{ada['id']}", headers=headers)

    assert response.status_code == 204
    assert await db.scalar(select(func.count()).select_from(Contact).where(Contact.id == ada["id"])) == 0
    tombstone = (
        await db.execute(select(ContactTombstone).where(ContactTombstone.contact_id == ada["id"]))
    ).scalar_one()
    assert (tombstone.user_id, tombstone.uid) == (owner.id, ada["uid"])
    head = await db.scalar(select(ContactCount.change_seq).where(ContactCount.user_id == owner.id))
    assert tombstone.change_seq == head
    await db.commit()
    assert (await trash_of(client, headers))["total"] == 0
    assert (await client.post(f"{API}/contacts/{ada['id']}/restore", headers=headers)).status_code == 404


async def test_the_cached_trash_page_is_fresh_after_every_write(client, headers):
    ada = await create(client, headers, {"first_name": "Ada"})
    assert (await trash_of(client, headers))["total"] == 0  # cached empty
    await client.delete(f"{API}/contacts/{ada['id']}", headers=headers)
    assert (await trash_of(client, headers))["total"] == 1
    assert (await trash_of(client, headers))["total"] == 1  # cached
    await client.post(f"{API}/contacts/{ada['id']}/restore", headers=headers)
    assert (await trash_of(client, headers))["total"] == 0


async def _age_trash(db, contact_id: int, days: int) -> None:
    await db.execute(update(Contact).where(Contact.id == contact_id).values(deleted_at=utcnow() - timedelta(days=days)))
    await db.commit()


async def test_clean_up_purges_contacts_trashed_longer_than_the_retention_once(
    client, headers, db, owner, settings, database
):
    old, recent = (
        await create(client, headers, {"first_name": "Old"}),
        await create(client, headers, {"first_name": "New"}),
    )
    for contact in (old, recent):
        await client.delete(f"{API}/contacts/{contact['id']}", headers=headers)
    await _age_trash(db, old["id"], settings.trash_retention_days + 1)
    await _age_trash(db, recent["id"], settings.trash_retention_days - 1)
    token = (await client.get(f"{API}/contacts/changes", headers=headers)).json()["next_token"]

    # Two workers at once: each contact is purged (and tombstoned) once.
    passes = await asyncio.gather(clean_up(database, settings), clean_up(database, settings))

    assert sum(done.purged for done in passes) == 1
    assert [item["id"] for item in (await trash_of(client, headers))["items"]] == [recent["id"]]
    tombstones = (await db.execute(select(ContactTombstone.contact_id))).scalars().all()
    await db.commit()
    assert tombstones == [old["id"]]
    changes = (await client.get(f"{API}/contacts/changes", params={"since": token}, headers=headers)).json()
    assert [(c["id"], c["op"]) for c in changes["changes"]] == [(old["id"], "delete")]


async def test_trash_pages_continue_by_cursor_bound_to_their_user(client, headers, settings, db):
    made = [await create(client, headers, {"first_name": f"C{n}"}) for n in range(5)]
    for contact in made:
        await client.delete(f"{API}/contacts/{contact['id']}", headers=headers)

    seen, cursor = [], None
    while True:
        page = await trash_of(client, headers, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert page["total"] == 5

    assert seen == [contact["id"] for contact in reversed(made)]
    first = await trash_of(client, headers, limit=2)
    intruder = await make_user(db, settings)
    stolen = await client.get(
        f"{API}/contacts/trash", params={"cursor": first["next_cursor"]}, headers=auth_headers(settings, intruder)
    )
    assert_error(stolen, 400, "InvalidCursor")
    forged = first["next_cursor"][:-3] + ("AAA" if not first["next_cursor"].endswith("AAA") else "BBB")
    assert_error(
        await client.get(f"{API}/contacts/trash", params={"cursor": forged}, headers=headers), 400, "InvalidCursor"
    )
    assert_error(
        await client.get(f"{API}/contacts/trash", params={"cursor": "!!"}, headers=headers), 400, "InvalidCursor"
    )


async def test_each_worker_runs_the_clean_up_periodically(client, headers, db, settings, database):
    old = await create(client, headers, {"first_name": "Old"})
    await client.delete(f"{API}/contacts/{old['id']}", headers=headers)
    await _age_trash(db, old["id"], settings.trash_retention_days + 1)

    task = asyncio.create_task(
        run_clean_up_periodically(database, settings.model_copy(update={"sync_cleanup_interval": 0.05}))
    )
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if (await trash_of(client, headers))["total"] == 0:
                break
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert (await trash_of(client, headers))["total"] == 0
    assert await db.scalar(select(func.count()).select_from(ContactTombstone)) == 1
