"""One user's contacts are invisible to every other user: by id, through the list, search and birthdays; and
no attempt of another user changes them. Another user's contact answers exactly like a missing one (404)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select

from app.contacts.models import Contact
from tests.factories import auth_headers, make_contact, make_user

API = "/api/v1"


async def contact_row(db, contact_id: int) -> dict | None:
    table = Contact.__table__
    row = (await db.execute(select(table).where(table.c.id == contact_id))).mappings().first()
    return dict(row) if row else None


async def contact_count(db, user_id: int) -> int:
    return int(await db.scalar(select(func.count()).select_from(Contact).where(Contact.user_id == user_id)) or 0)


def today_utc() -> date:
    return datetime.now(UTC).date()


@pytest.fixture
async def alice(db, settings):
    return await make_user(db, settings, email="alice@example.com")


@pytest.fixture
async def bob(db, settings):
    return await make_user(db, settings, email="bob@example.com")


@pytest.fixture
def alice_headers(settings, alice):
    return auth_headers(settings, alice)


@pytest.fixture
def bob_headers(settings, bob):
    return auth_headers(settings, bob)


@pytest.fixture
async def alices_contact(db, alice):
    today = today_utc()
    return await make_contact(db, alice, first_name="Anna", last_name="Alpha", birthday=date(1990, today.month, 1))


@pytest.fixture
async def bobs_contact(db, bob):
    """Bob's secret contact: a distinctive name and email, and a birthday today (2000 is a leap year)."""
    today = today_utc()
    return await make_contact(
        db,
        bob,
        first_name="Zebediah",
        last_name="Secretson",
        email="zeb@hidden.example",
        phone="555 0100",
        notes="private",
        birthday=date(2000, today.month, today.day),
    )


@pytest.fixture
async def bobs_row_before(db, bobs_contact):
    return await contact_row(db, bobs_contact.id)


# -- by id -------------------------------------------------------------------------------------------------


async def test_read_foreign_contact_returns_404_like_missing_one(client, alice_headers, bobs_contact):
    foreign = await client.get(f"{API}/contacts/{bobs_contact.id}", headers=alice_headers)
    missing = await client.get(f"{API}/contacts/{bobs_contact.id + 1000}", headers=alice_headers)

    assert foreign.status_code == 404, foreign.text
    assert foreign.json() == missing.json()
    assert foreign.json()["error"] == "ContactNotFound"
    assert "Zebediah" not in foreign.text


async def test_read_foreign_contact_cached_by_its_owner_returns_404(client, alice_headers, bob_headers, bobs_contact):
    assert (await client.get(f"{API}/contacts/{bobs_contact.id}", headers=bob_headers)).status_code == 200

    response = await client.get(f"{API}/contacts/{bobs_contact.id}", headers=alice_headers)

    assert response.status_code == 404, response.text
    assert "Zebediah" not in response.text


async def test_replace_foreign_contact_returns_404_and_leaves_it_unchanged(
    client, db, alice_headers, bobs_contact, bobs_row_before
):
    response = await client.put(
        f"{API}/contacts/{bobs_contact.id}",
        json={"first_name": "Hijacked", "email": "a@x.example"},
        headers=alice_headers,
    )

    assert response.status_code == 404, response.text
    assert response.json()["error"] == "ContactNotFound"
    assert await contact_row(db, bobs_contact.id) == bobs_row_before


async def test_update_foreign_contact_returns_404_and_leaves_it_unchanged(
    client, db, alice_headers, bobs_contact, bobs_row_before
):
    response = await client.patch(f"{API}/contacts/{bobs_contact.id}", json={"notes": "gotcha"}, headers=alice_headers)

    assert response.status_code == 404, response.text
    assert response.json()["error"] == "ContactNotFound"
    assert await contact_row(db, bobs_contact.id) == bobs_row_before


async def test_update_foreign_contact_with_clashing_email_returns_404_not_409(
    client, db, alice, alice_headers, bobs_contact, bobs_row_before
):
    await make_contact(db, alice, email="mine@example.com")

    response = await client.patch(
        f"{API}/contacts/{bobs_contact.id}", json={"email": "mine@example.com"}, headers=alice_headers
    )

    assert response.status_code == 404, response.text
    assert await contact_row(db, bobs_contact.id) == bobs_row_before


async def test_delete_foreign_contact_returns_404_and_keeps_it(
    client, db, alice_headers, bob_headers, bobs_contact, bobs_row_before
):
    response = await client.delete(f"{API}/contacts/{bobs_contact.id}", headers=alice_headers)

    assert response.status_code == 404, response.text
    assert response.json()["error"] == "ContactNotFound"
    assert await contact_row(db, bobs_contact.id) == bobs_row_before
    assert (await client.get(f"{API}/contacts/{bobs_contact.id}", headers=bob_headers)).status_code == 200


async def test_owner_reads_contact_unchanged_after_foreign_attempts(
    client, db, alice_headers, bob_headers, bobs_contact, bobs_row_before
):
    original = (await client.get(f"{API}/contacts/{bobs_contact.id}", headers=bob_headers)).json()
    url = f"{API}/contacts/{bobs_contact.id}"

    attempts = [
        await client.put(url, json={"first_name": "Hijacked"}, headers=alice_headers),
        await client.patch(url, json={"first_name": "Hijacked"}, headers=alice_headers),
        await client.delete(url, headers=alice_headers),
    ]

    assert [r.status_code for r in attempts] == [404, 404, 404]
    assert (await client.get(url, headers=bob_headers)).json() == original
    assert await contact_row(db, bobs_contact.id) == bobs_row_before


# -- list, search, birthdays -------------------------------------------------------------------------------


async def test_list_shows_only_own_contacts(client, alice, alice_headers, alices_contact, bobs_contact):
    response = await client.get(f"{API}/contacts", params={"limit": 100}, headers=alice_headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["id"] for item in body["items"]] == [alices_contact.id]
    assert body["total"] == 1
    assert {item["user_id"] for item in body["items"]} == {alice.id}


@pytest.mark.parametrize("q", ["zeb", "Secretson", "hidden.example", "e"])
async def test_search_never_finds_foreign_contacts(client, alice_headers, alices_contact, bobs_contact, q):
    response = await client.get(f"{API}/contacts", params={"q": q}, headers=alice_headers)

    assert response.status_code == 200, response.text
    assert bobs_contact.id not in [item["id"] for item in response.json()["items"]]
    assert "Zebediah" not in response.text


async def test_search_finds_own_contact_that_another_user_also_matches(
    client, alice_headers, bob_headers, bobs_contact
):
    created = await client.post(f"{API}/contacts", json={"first_name": "Zebulon"}, headers=alice_headers)
    assert created.status_code == 201

    alices = (await client.get(f"{API}/contacts", params={"q": "zeb"}, headers=alice_headers)).json()
    bobs = (await client.get(f"{API}/contacts", params={"q": "zeb"}, headers=bob_headers)).json()

    assert [item["first_name"] for item in alices["items"]] == ["Zebulon"]
    assert [item["first_name"] for item in bobs["items"]] == ["Zebediah"]


async def test_birthdays_never_show_foreign_contacts(client, alice_headers, bob_headers, bobs_contact):
    alices = await client.get(f"{API}/contacts/birthdays", params={"days": 365}, headers=alice_headers)
    bobs = await client.get(f"{API}/contacts/birthdays", params={"days": 0}, headers=bob_headers)

    assert alices.status_code == 200, alices.text
    assert (alices.json()["items"], alices.json()["total"]) == ([], 0)
    assert [item["id"] for item in bobs.json()["items"]] == [bobs_contact.id]


async def test_list_of_one_user_is_not_served_to_another_from_cache(client, alice_headers, bob_headers, bobs_contact):
    assert (await client.get(f"{API}/contacts", headers=bob_headers)).json()["total"] == 1  # Bob's page cached

    response = await client.get(f"{API}/contacts", headers=alice_headers)

    assert (response.json()["items"], response.json()["total"]) == ([], 0)


# -- writes that try to reach another user -----------------------------------------------------------------


async def test_create_contact_with_foreign_contacts_email_is_own_contact(
    client, db, alice, alice_headers, bobs_contact, bobs_row_before
):
    response = await client.post(
        f"{API}/contacts", json={"first_name": "Zeb", "email": "ZEB@hidden.example"}, headers=alice_headers
    )

    assert response.status_code == 201, response.text
    assert response.json()["user_id"] == alice.id
    assert await contact_count(db, alice.id) == 1
    assert await contact_row(db, bobs_contact.id) == bobs_row_before


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_contact_body_cannot_set_owner(
    client, db, alice, bob, alice_headers, alices_contact, bobs_contact, method
):
    alices_before = await contact_row(db, alices_contact.id)
    url = f"{API}/contacts" if method == "POST" else f"{API}/contacts/{alices_contact.id}"

    response = await client.request(method, url, json={"first_name": "Moved", "user_id": bob.id}, headers=alice_headers)

    assert response.status_code == 422, response.text
    assert any("user_id" in err["loc"] for err in response.json()["detail"])
    assert await contact_count(db, bob.id) == 1
    assert await contact_count(db, alice.id) == 1
    assert await contact_row(db, alices_contact.id) == alices_before


async def test_deleting_own_contact_leaves_foreign_contacts(
    client, db, alice_headers, alices_contact, bobs_contact, bobs_row_before
):
    response = await client.delete(f"{API}/contacts/{alices_contact.id}", headers=alice_headers)

    assert response.status_code == 204
    assert (await contact_row(db, alices_contact.id))["deleted_at"] is not None  # in the trash (issue 11)
    assert await contact_row(db, bobs_contact.id) == bobs_row_before
