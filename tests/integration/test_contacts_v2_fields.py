"""Contact model v2 through HTTP: the new fields, v1's `email`/`phone` as the primary entries, one primary per list,
label spellings, E.164 phones read in the user's region, uids, the email rule over every email of live contacts,
vCard properties that survive every REST write, and search over organisation, every email and phone digits."""

from __future__ import annotations

import asyncio
import uuid

import phonenumbers
import pytest
from sqlalchemy import select, update

from app.contacts.models import Contact, ContactEmail
from app.core.db import commit
from tests.factories import auth_headers, make_contact, make_user

API = "/api/v1"


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings)


@pytest.fixture
def headers(settings, owner):
    return auth_headers(settings, owner)


async def row(db, contact_id: int) -> dict:
    table = Contact.__table__
    found = (await db.execute(select(table).where(table.c.id == contact_id))).mappings().first()
    assert found is not None
    return dict(found)


async def create(client, headers, **body) -> dict:
    response = await client.post(f"{API}/contacts", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


FULL_V2 = {
    "first_name": "Ada",
    "middle_name": "King",
    "last_name": "Lovelace",
    "prefix": "Countess",
    "suffix": "FRS",
    "nickname": "Enchantress",
    "organization": "Analytical Engines",
    "job_title": "Programmer",
    "emails": [
        {"value": "ada@work.example", "label": "Work", "primary": False},
        {"value": "ada@home.example", "label": "  HOME ", "primary": True},
    ],
    "phones": [{"value": "+44 20 7946 0958", "label": "Cell"}],
    "addresses": [{"label": "home", "street": "12 St James's Square", "locality": "London", "country": "UK"}],
    "urls": [{"value": "https://ada.example", "label": "blog"}],
    "labels": ["Family", " family ", "Friends"],
    "favorite": True,
    "birthday": "1815-12-10",
    "anniversary": "1835-07-08",
    "notes": "n",
}


# -- fields ------------------------------------------------------------------------------------------------------


async def test_create_with_every_v2_field_returns_them_spelled_consistently(client, db, owner, headers):
    body = await create(client, headers, **FULL_V2)

    assert {k: body[k] for k in ("middle_name", "prefix", "suffix", "nickname", "organization", "job_title")} == {
        k: FULL_V2[k] for k in ("middle_name", "prefix", "suffix", "nickname", "organization", "job_title")
    }
    assert body["emails"] == [
        {"value": "ada@work.example", "label": "work", "primary": False},
        {"value": "ada@home.example", "label": "home", "primary": True},
    ]
    assert body["email"] == "ada@home.example"  # v1's email: the primary entry
    assert body["phones"] == [
        {"value": "+44 20 7946 0958", "e164": "+442079460958", "label": "mobile", "primary": True}
    ]
    assert body["phone"] == "+44 20 7946 0958"
    assert body["addresses"] == [
        {
            "label": "home",
            "street": "12 St James's Square",
            "locality": "London",
            "region": None,
            "postal_code": None,
            "country": "UK",
            "primary": True,
        }
    ]
    assert body["urls"] == [{"value": "https://ada.example", "label": "blog"}]
    assert body["labels"] == ["family", "friends"]
    assert (body["favorite"], body["anniversary"], body["birthday"]) == (True, "1835-07-08", "1815-12-10")
    assert body["etag"] == f'"{body["id"]}-1"'
    stored = await row(db, body["id"])
    assert (stored["email"], stored["phone"], stored["version"]) == ("ada@home.example", "+44 20 7946 0958", 1)
    assert stored["labels"] == ["family", "friends"]
    mirrored = (
        await db.execute(select(ContactEmail.value_lower).where(ContactEmail.contact_id == body["id"]))
    ).scalars()
    assert sorted(mirrored) == ["ada@home.example", "ada@work.example"]
    assert (await client.get(f"{API}/contacts/{body['id']}", headers=headers)).json() == body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"emails": [{"value": "a@x.example", "primary": True}, {"value": "b@x.example", "primary": True}]}, "emails"),
        ({"emails": [{"value": "a@x.example"}, {"value": "A@x.example"}]}, "emails"),
        ({"email": "a@x.example", "emails": [{"value": "b@x.example"}]}, None),
        ({"email": None, "emails": [{"value": "b@x.example"}]}, None),
        ({"phone": "+1 555 0100", "phones": [{"value": "+1 555 0199"}]}, None),
        ({"labels": ["   "]}, "labels"),
        ({"labels": ["x" * 101]}, "labels"),
        ({"emails": [{"value": f"a{n}@x.example"} for n in range(21)]}, "emails"),
        ({"favorite": "yes"}, "favorite"),
        ({"uid": "has space"}, "uid"),
        ({"anniversary": "1700-01-01"}, "anniversary"),
    ],
)
async def test_create_with_bad_v2_body_returns_422_and_stores_nothing(client, db, owner, headers, body, field):
    response = await client.post(f"{API}/contacts", json={"first_name": "X", **body}, headers=headers)

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationError"
    if field is not None:
        assert any(field in err["loc"] for err in response.json()["detail"]), response.json()
    assert (await db.execute(select(Contact.id))).first() is None


async def test_first_entry_is_primary_when_none_is_marked(client, headers):
    body = await create(
        client, headers, first_name="P", emails=[{"value": "one@x.example"}, {"value": "two@x.example"}]
    )

    assert [entry["primary"] for entry in body["emails"]] == [True, False]
    assert body["email"] == "one@x.example"


async def test_email_with_agreeing_emails_is_accepted(client, headers):
    body = await create(
        client, headers, first_name="A", email="One@x.example", emails=[{"value": "one@x.example", "label": "work"}]
    )

    assert body["emails"] == [{"value": "one@x.example", "label": "work", "primary": True}]


# -- v1 compatibility --------------------------------------------------------------------------------------------


async def test_v1_create_makes_primary_entries(client, headers):
    body = await create(client, headers, first_name="V1", email="v1@x.example", phone="+1 650 253 0000")

    assert body["emails"] == [{"value": "v1@x.example", "label": None, "primary": True}]
    assert body["phones"] == [{"value": "+1 650 253 0000", "e164": "+16502530000", "label": None, "primary": True}]


async def test_v1_put_leaves_exactly_its_email_and_phone_as_the_only_entries(client, db, headers):
    contact = await create(client, headers, **FULL_V2)

    response = await client.put(
        f"{API}/contacts/{contact['id']}",
        json={"first_name": "Ada", "email": "only@x.example", "phone": "+1 650 253 0000"},
        headers=headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["emails"] == [{"value": "only@x.example", "label": None, "primary": True}]
    assert [(p["value"], p["primary"]) for p in body["phones"]] == [("+1 650 253 0000", True)]
    assert (body["email"], body["phone"]) == ("only@x.example", "+1 650 253 0000")
    # PUT replaces every field the API exposes.
    assert (body["addresses"], body["urls"], body["labels"], body["favorite"], body["nickname"]) == (
        [],
        [],
        [],
        False,
        None,
    )
    assert body["uid"] == contact["uid"]
    assert body["etag"] == f'"{contact["id"]}-2"'
    mirrored = (
        await db.execute(select(ContactEmail.value_lower).where(ContactEmail.contact_id == contact["id"]))
    ).scalars()
    assert list(mirrored) == ["only@x.example"]


async def test_v1_patch_of_email_changes_the_primary_entry_and_keeps_the_others(client, headers):
    contact = await create(client, headers, **FULL_V2)

    response = await client.patch(f"{API}/contacts/{contact['id']}", json={"email": "new@x.example"}, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["emails"] == [
        {"value": "ada@work.example", "label": "work", "primary": False},
        {"value": "new@x.example", "label": "home", "primary": True},
    ]
    assert response.json()["email"] == "new@x.example"


async def test_v1_patch_of_email_to_null_removes_the_primary_and_the_next_becomes_primary(client, headers):
    contact = await create(client, headers, **FULL_V2)

    response = await client.patch(f"{API}/contacts/{contact['id']}", json={"email": None}, headers=headers)

    assert response.json()["emails"] == [{"value": "ada@work.example", "label": "work", "primary": True}]
    assert response.json()["email"] == "ada@work.example"


async def test_patch_with_email_disagreeing_with_emails_returns_422_and_changes_nothing(client, db, headers):
    contact = await create(client, headers, **FULL_V2)
    before = await row(db, contact["id"])

    response = await client.patch(
        f"{API}/contacts/{contact['id']}",
        json={"email": "a@x.example", "emails": [{"value": "b@x.example"}]},
        headers=headers,
    )

    assert response.status_code == 422, response.text
    assert await row(db, contact["id"]) == before


@pytest.mark.parametrize("field", ["emails", "labels", "favorite", "phones"])
async def test_patch_with_null_list_or_flag_returns_422(client, headers, field):
    contact = await create(client, headers, first_name="N")

    response = await client.patch(f"{API}/contacts/{contact['id']}", json={field: None}, headers=headers)

    assert response.status_code == 422, response.text


async def test_put_with_uid_returns_422_and_uid_never_changes(client, db, headers):
    contact = await create(client, headers, first_name="U")

    response = await client.put(
        f"{API}/contacts/{contact['id']}", json={"first_name": "U", "uid": "x"}, headers=headers
    )

    assert response.status_code == 422, response.text
    assert (await row(db, contact["id"]))["uid"] == contact["uid"]


async def test_vcard_properties_survive_every_rest_write(client, db, owner, headers):
    contact = await create(client, headers, first_name="V", email="v@x.example")
    extra = {"X-SOCIALPROFILE": [{"value": "https://social.example/v", "params": {"type": ["twitter"]}}]}
    await db.execute(update(Contact).where(Contact.id == contact["id"]).values(vcard_extra=extra))
    await commit(db)

    for method, body in (
        ("PUT", {"first_name": "W"}),
        ("PATCH", {"labels": ["x"], "email": "w@x.example"}),
        ("PATCH", {"phones": [{"value": "+1 650 253 0000"}]}),
    ):
        response = await client.request(method, f"{API}/contacts/{contact['id']}", json=body, headers=headers)
        assert response.status_code == 200, response.text
    assert "vcard_extra" not in response.json()
    db.expire_all()
    assert (await row(db, contact["id"]))["vcard_extra"] == extra


async def test_an_address_with_no_part_filled_in_is_left_out(client, headers):
    body = await create(
        client,
        headers,
        first_name="Ada",
        addresses=[{"label": "home", "street": "  "}, {}, {"locality": "Paris", "label": "work"}],
    )

    assert [(a["label"], a["locality"], a["primary"]) for a in body["addresses"]] == [("work", "Paris", True)]


# -- phones ------------------------------------------------------------------------------------------------------


async def test_national_number_is_read_in_the_users_region_and_kept_after_a_region_change(client, db, headers):
    no_region = await create(client, headers, first_name="A", phone="(650) 253-0000")
    assert no_region["phones"][0]["e164"] is None  # no region yet: kept as entered, not refused

    settings_response = await client.patch(f"{API}/users/me", json={"default_region": "US"}, headers=headers)
    assert settings_response.status_code == 200, settings_response.text
    assert settings_response.json()["default_region"] == "US"
    assert (await client.get(f"{API}/users/me", headers=headers)).json()["default_region"] == "US"
    us = await create(client, headers, first_name="B", phone="(650) 253-0000")
    await client.patch(f"{API}/users/me", json={"default_region": "GB"}, headers=headers)
    relabelled = await client.patch(
        f"{API}/contacts/{us['id']}", json={"phones": [{"value": "(650) 253-0000", "label": "work"}]}, headers=headers
    )
    gb = await create(client, headers, first_name="C", phones=[{"value": "020 7946 0958"}, {"value": "123"}])

    assert us["phones"][0]["e164"] == "+16502530000"
    assert relabelled.json()["phones"][0] == {
        "value": "(650) 253-0000",
        "e164": "+16502530000",  # written before the change: not rewritten
        "label": "work",
        "primary": True,
    }
    assert [p["e164"] for p in gb["phones"]] == ["+442079460958", None]
    assert (await client.get(f"{API}/contacts/{no_region['id']}", headers=headers)).json()["phones"][0]["e164"] is None


async def test_default_phone_region_setting_is_the_fallback(client, app, db, settings, headers):
    app.state.settings = settings.model_copy(update={"default_phone_region": "FR"})
    try:
        body = await create(client, headers, first_name="F", phone="01 42 68 53 00")
    finally:
        app.state.settings = settings

    assert body["phones"][0]["e164"] == "+33142685300"


async def test_unknown_default_region_returns_422(client, headers):
    for region in ("ZZ", "us", "00", "USA"):
        response = await client.patch(f"{API}/users/me", json={"default_region": region}, headers=headers)

        assert response.status_code == 422, response.text


async def test_the_schema_lists_exactly_the_accepted_regions(client):
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["UserSettingsUpdate"]
    listed = next(choice for choice in schema["properties"]["default_region"]["anyOf"] if "enum" in choice)["enum"]

    assert "ZZ" not in listed
    assert set(listed) == phonenumbers.SUPPORTED_REGIONS


# -- uid ---------------------------------------------------------------------------------------------------------


async def test_uid_is_a_uuid_unless_sent_and_unique_per_book_trash_included(client, db, settings, headers):
    made = await create(client, headers, first_name="A")
    given = await create(client, headers, first_name="B", uid="urn:uuid:given-1")
    other_user = await make_user(db, settings)
    elsewhere = await client.post(
        f"{API}/contacts",
        json={"first_name": "C", "uid": "urn:uuid:given-1"},
        headers=auth_headers(settings, other_user),
    )
    await client.delete(f"{API}/contacts/{given['id']}", headers=headers)

    again = await client.post(f"{API}/contacts", json={"first_name": "D", "uid": "urn:uuid:given-1"}, headers=headers)

    assert str(uuid.UUID(made["uid"])) == made["uid"]
    assert given["uid"] == "urn:uuid:given-1"
    assert elsewhere.status_code == 201, elsewhere.text  # another user's book: fine, and nothing to probe
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "ContactUidExists"


# -- the email rule ----------------------------------------------------------------------------------------------


async def test_any_email_of_another_live_contact_is_refused_with_409(client, db, owner, headers):
    await create(client, headers, first_name="A", emails=[{"value": "a@x.example"}, {"value": "shared@x.example"}])
    target = await create(client, headers, first_name="B", email="b@x.example")

    created = await client.post(
        f"{API}/contacts",
        json={"first_name": "C", "emails": [{"value": "c@x.example"}, {"value": "SHARED@x.example"}]},
        headers=headers,
    )
    patched = await client.patch(
        f"{API}/contacts/{target['id']}",
        json={"emails": [{"value": "b@x.example"}, {"value": "shared@X.example"}]},
        headers=headers,
    )

    assert (created.status_code, created.json()["error"]) == (409, "ContactEmailExists")
    assert (patched.status_code, patched.json()["error"]) == (409, "ContactEmailExists")
    assert (await row(db, target["id"]))["emails"] == [{"value": "b@x.example", "label": None, "primary": True}]


async def test_emails_of_trashed_contacts_do_not_count(client, headers):
    trashed = await create(client, headers, first_name="A", email="gone@x.example")
    assert (await client.delete(f"{API}/contacts/{trashed['id']}", headers=headers)).status_code == 204

    response = await client.post(
        f"{API}/contacts", json={"first_name": "B", "email": "gone@x.example"}, headers=headers
    )

    assert response.status_code == 201, response.text


async def test_concurrent_creates_with_one_email_make_one_contact(client, db, owner, headers):
    # Separate requests, separate connections: the user's contact_counts row lock (PostgreSQL) or the database's
    # write lock (SQLite), taken by each write's first statement, serialises the check and the insert.
    responses = await asyncio.gather(
        *(
            client.post(f"{API}/contacts", json={"first_name": f"R{n}", "email": "race@x.example"}, headers=headers)
            for n in range(8)
        )
    )

    assert sorted(r.status_code for r in responses) == [201] + [409] * 7
    holders = (
        await db.execute(select(ContactEmail.contact_id).where(ContactEmail.value_lower == "race@x.example"))
    ).all()
    assert len(holders) == 1


# -- search ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("5550199", ["Phone"]),
        ("555-0199", ["Phone"]),
        ("(555) 01", ["Phone"]),
        ("analytical", ["Org"]),
        ("second@", ["Emails"]),
        ("enchant", ["Nick"]),
        ("0199", ["Phone"]),
    ],
)
async def test_search_matches_organization_every_email_nickname_and_phone_digits(
    client, db, owner, headers, q, expected
):
    await make_contact(
        db,
        owner,
        first_name="Phone",
        email=None,
        phones=[{"value": "+1 555-0199", "e164": None, "label": None, "primary": True}],
    )
    await make_contact(db, owner, first_name="Org", email=None, organization="Analytical Engines")
    await make_contact(
        db,
        owner,
        first_name="Emails",
        email=None,
        emails=[
            {"value": "first@x.example", "label": None, "primary": True},
            {"value": "second@x.example", "label": None, "primary": False},
        ],
    )
    await make_contact(db, owner, first_name="Nick", email=None, nickname="Enchantress")

    body = (await client.get(f"{API}/contacts", params={"q": q}, headers=headers)).json()

    assert [item["first_name"] for item in body["items"]] == expected
    assert body["total"] == len(expected)
