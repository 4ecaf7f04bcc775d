"""Duplicates and merges through HTTP: groups of contacts sharing an email (ignoring case), a phone (E.164) or a
normalised full name, with reasons and scores; a merge keeps every entry once on the primary and moves the others
to the trash, whence restoring them undoes it."""

from __future__ import annotations

import pytest

from app.interchange.duplicates import normalised_name
from tests.factories import auth_headers, make_user

API = "/api/v1"


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings)


@pytest.fixture
async def headers(client, settings, owner):
    headers = auth_headers(settings, owner)
    assert (await client.patch(f"{API}/users/me", json={"default_region": "GB"}, headers=headers)).status_code == 200
    return headers


async def create(client, headers, **body) -> dict:
    response = await client.post(f"{API}/contacts", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def import_cards(client, headers, text: str) -> None:
    response = await client.post(
        f"{API}/contacts/import", content=text.encode(), headers={**headers, "Content-Type": "text/vcard"}
    )
    assert response.status_code == 200, response.text


def test_names_are_compared_without_case_accents_or_punctuation():
    assert normalised_name("José", None, "O'Neil") == normalised_name("jose", "", "ONEIL") == "jose oneil"
    assert normalised_name("Anne-Marie", None, "  Dupont ") == "anne marie dupont"


async def test_duplicates_are_grouped_by_email_phone_and_name_with_reasons(client, headers):
    a = await create(client, headers, first_name="Ada", last_name="Lovelace", emails=[{"value": "ada@example.com"}])
    # Imports may hold an email another contact holds (REST refuses it).
    await import_cards(
        client,
        headers,
        "BEGIN:VCARD\r\nVERSION:3.0\r\nN:King;Augusta;;;\r\nEMAIL:ADA@example.com\r\nEND:VCARD\r\n",
    )
    b = (await client.get(f"{API}/contacts", params={"q": "augusta"}, headers=headers)).json()["items"][0]
    c = await create(client, headers, first_name="Charles", last_name="Babbage", phones=[{"value": "020 7946 0958"}])
    d = await create(client, headers, first_name="Chas", last_name="B", phones=[{"value": "+44 20 7946 0958"}])
    e = await create(client, headers, first_name="Mary", last_name="Somerville")
    f = await create(client, headers, first_name="MARY", last_name="Somervillé")
    await create(client, headers, first_name="Alone")

    response = await client.get(f"{API}/contacts/duplicates", headers=headers)

    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 3
    assert [(g["ids"], g["score"]) for g in body["groups"]] == [
        ([a["id"], b["id"]], 0.9),
        ([c["id"], d["id"]], 0.8),
        ([e["id"], f["id"]], 0.5),
    ]
    assert body["groups"][0]["reasons"] == [{"kind": "email", "value": "ada@example.com", "ids": [a["id"], b["id"]]}]
    assert body["groups"][1]["reasons"] == [{"kind": "phone", "value": "+442079460958", "ids": [c["id"], d["id"]]}]
    assert body["groups"][2]["reasons"] == [{"kind": "name", "value": "mary somerville", "ids": [e["id"], f["id"]]}]
    assert (await client.get(f"{API}/contacts/duplicates", params={"limit": 1}, headers=headers)).json()[
        "groups"
    ] == body["groups"][:1]


async def test_a_merge_keeps_every_entry_once_and_trashes_the_others_which_restore_undoes(client, headers):
    primary = await create(
        client,
        headers,
        first_name="Ada",
        last_name="Lovelace",
        emails=[{"value": "ada@example.com", "label": "work"}],
        phones=[{"value": "+44 20 7946 0958"}],
        labels=["maths"],
        notes="first",
    )
    other = await create(
        client,
        headers,
        first_name="Ada",
        organization="Analytical Engines",
        emails=[{"value": "ada@home.example"}],
        phones=[{"value": "+44 20 7946 0958"}, {"value": "+44 20 7946 0000"}],
        addresses=[{"locality": "London"}],
        labels=["Maths", "family"],
        favorite=True,
        notes="second",
    )

    response = await client.post(
        f"{API}/contacts/merge", json={"ids": [other["id"]], "primary": primary["id"]}, headers=headers
    )

    assert response.status_code == 200, response.text
    merged = response.json()["contact"]
    assert response.json()["trashed"] == [other["id"]]
    assert merged["id"] == primary["id"]
    assert [e["value"] for e in merged["emails"]] == ["ada@example.com", "ada@home.example"]
    assert [p["value"] for p in merged["phones"]] == ["+44 20 7946 0958", "+44 20 7946 0000"]
    assert [a["locality"] for a in merged["addresses"]] == ["London"]
    assert (merged["last_name"], merged["organization"], merged["favorite"]) == ("Lovelace", "Analytical Engines", True)
    assert merged["labels"] == ["maths", "Maths", "family"]
    assert merged["notes"] == "first\n\nsecond"
    assert (await client.get(f"{API}/contacts/{other['id']}", headers=headers)).status_code == 404
    assert (await client.get(f"{API}/contacts/duplicates", headers=headers)).json()["total"] == 0

    restored = await client.post(f"{API}/contacts/{other['id']}/restore", headers=headers)

    assert restored.status_code == 200
    assert restored.json()["notes"] == "second"


async def test_merging_a_contact_that_is_not_yours_changes_nothing(client, db, settings, headers):
    mine = await create(client, headers, first_name="Mine")
    stranger = await make_user(db, settings)
    theirs = await create(client, auth_headers(settings, stranger), first_name="Theirs")

    response = await client.post(
        f"{API}/contacts/merge", json={"ids": [theirs["id"]], "primary": mine["id"]}, headers=headers
    )

    assert response.status_code == 404
    assert (await client.get(f"{API}/contacts/{mine['id']}", headers=headers)).json()["etag"] == mine["etag"]
    stranger_view = await client.get(f"{API}/contacts/{theirs['id']}", headers=auth_headers(settings, stranger))
    assert stranger_view.status_code == 200


async def test_merging_ids_beyond_any_stored_one_answers_404(client, headers):
    mine = await create(client, headers, first_name="Mine")

    response = await client.post(
        f"{API}/contacts/merge", json={"ids": [9223372036854776000], "primary": mine["id"]}, headers=headers
    )

    assert response.status_code == 404
    assert response.json()["error"] == "ContactNotFound"
