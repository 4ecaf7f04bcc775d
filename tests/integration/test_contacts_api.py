"""The contacts API of one user: create, read, replace, update, delete, list, search, upcoming birthdays; and
the health check."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.contacts.models import Contact, ContactCount
from tests.factories import auth_headers, make_contact, make_user

API = "/api/v1"
V1_FIELDS = {
    "id",
    "user_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "birthday",
    "notes",
    "created_at",
    "updated_at",
}
# Model v2 (issue 11) adds fields; every v1 field is still there with its v1 meaning.
CONTACT_FIELDS = V1_FIELDS | {
    "uid",
    "middle_name",
    "prefix",
    "suffix",
    "nickname",
    "organization",
    "job_title",
    "emails",
    "phones",
    "addresses",
    "urls",
    "labels",
    "favorite",
    "anniversary",
    "etag",
}
EDITABLE = ("first_name", "last_name", "email", "phone", "birthday", "notes")
FULL = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.com",
    "phone": "+44 20 7946 0000",
    "birthday": "1815-12-10",
    "notes": "Analytical Engine",
}


def assert_error(response, status: int, error: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert body["detail"], body
    if error is not None:
        assert body["error"] == error, body
    return body


async def contact_row(db, contact_id: int) -> dict | None:
    """The row as the database holds it now (a Core select: never the session's cached objects)."""
    table = Contact.__table__
    row = (await db.execute(select(table).where(table.c.id == contact_id))).mappings().first()
    return dict(row) if row else None


async def contact_count(db, user_id: int | None = None) -> int:
    query = select(func.count()).select_from(Contact)
    if user_id is not None:
        query = query.where(Contact.user_id == user_id)
    return int(await db.scalar(query) or 0)


def editable(row: dict) -> dict:
    values = {name: row[name] for name in EDITABLE}
    if isinstance(values["birthday"], date):
        values["birthday"] = values["birthday"].isoformat()
    return values


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings)


@pytest.fixture
def headers(settings, owner):
    return auth_headers(settings, owner)


# -- create ------------------------------------------------------------------------------------------------


async def test_create_contact_returns_201_with_every_field(client, db, owner, headers):
    response = await client.post(f"{API}/contacts", json=FULL, headers=headers)

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == CONTACT_FIELDS
    assert {name: body[name] for name in EDITABLE} == FULL
    assert body["user_id"] == owner.id
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert datetime.fromisoformat(body["updated_at"]).tzinfo is not None
    row = await contact_row(db, body["id"])
    assert row is not None
    assert row["user_id"] == owner.id
    assert editable(row) == FULL


async def test_create_contact_with_first_name_only_leaves_others_null(client, db, headers):
    response = await client.post(f"{API}/contacts", json={"first_name": "Solo"}, headers=headers)

    assert response.status_code == 201, response.text
    body = response.json()
    expected = {"first_name": "Solo"} | dict.fromkeys(EDITABLE[1:])
    assert {name: body[name] for name in EDITABLE} == expected
    assert editable(await contact_row(db, body["id"])) == expected


async def test_create_contact_without_first_name_returns_422(client, db, owner, headers):
    response = await client.post(f"{API}/contacts", json={"last_name": "Nameless"}, headers=headers)

    detail = assert_error(response, 422, "ValidationError")["detail"]
    assert any("first_name" in err["loc"] for err in detail)
    assert await contact_count(db) == 0


@pytest.mark.parametrize("second", ["ada@example.com", "ADA@example.com", "Ada@Example.Com"])
async def test_create_contact_with_taken_email_returns_409(client, db, owner, headers, second):
    await make_contact(db, owner, email="ada@example.com")

    response = await client.post(f"{API}/contacts", json={"first_name": "Twin", "email": second}, headers=headers)

    assert_error(response, 409, "ContactEmailExists")
    assert await contact_count(db, owner.id) == 1


async def test_create_contact_with_email_of_another_users_contact_returns_201(client, db, settings, owner, headers):
    other = await make_user(db, settings)
    await make_contact(db, other, email="shared@example.com")

    response = await client.post(
        f"{API}/contacts", json={"first_name": "Mine", "email": "shared@example.com"}, headers=headers
    )

    assert response.status_code == 201, response.text
    assert response.json()["email"] == "shared@example.com"
    assert await contact_count(db, owner.id) == 1
    assert await contact_count(db, other.id) == 1


async def test_create_contacts_without_email_do_not_clash(client, db, owner, headers):
    first = await client.post(f"{API}/contacts", json={"first_name": "One"}, headers=headers)
    second = await client.post(f"{API}/contacts", json={"first_name": "Two", "email": None}, headers=headers)

    assert (first.status_code, second.status_code) == (201, 201), second.text
    assert await contact_count(db, owner.id) == 2


async def test_create_contact_without_token_returns_401(client, db, owner):
    response = await client.post(f"{API}/contacts", json={"first_name": "Anon"})

    assert_error(response, 401)
    assert await contact_count(db) == 0


# -- read --------------------------------------------------------------------------------------------------


async def test_read_own_contact_returns_it(client, db, owner, headers):
    contact = await make_contact(db, owner, first_name="Ada", birthday=date(1815, 12, 10))

    response = await client.get(f"{API}/contacts/{contact.id}", headers=headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == CONTACT_FIELDS
    assert (body["id"], body["user_id"], body["first_name"]) == (contact.id, owner.id, "Ada")
    assert body["email"] == contact.email
    assert body["birthday"] == "1815-12-10"


async def test_read_missing_contact_returns_404(client, db, owner, headers):
    contact = await make_contact(db, owner)

    response = await client.get(f"{API}/contacts/{contact.id + 1000}", headers=headers)

    assert_error(response, 404, "ContactNotFound")


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_contact_with_largest_64_bit_id_returns_404(client, db, owner, headers, method):
    await make_contact(db, owner)
    body = {"first_name": "Max"} if method in ("PUT", "PATCH") else None

    response = await client.request(method, f"{API}/contacts/{2**63 - 1}", json=body, headers=headers)

    assert_error(response, 404, "ContactNotFound")
    assert await contact_count(db) == 1


# -- replace (PUT) -----------------------------------------------------------------------------------------


async def test_replace_contact_sets_omitted_fields_to_null(client, db, owner, headers):
    contact = await make_contact(
        db, owner, first_name="Old", last_name="Name", phone="123", birthday=date(1990, 1, 1), notes="n"
    )
    before = await contact_row(db, contact.id)

    response = await client.put(
        f"{API}/contacts/{contact.id}", json={"first_name": "New", "email": "new@example.com"}, headers=headers
    )

    assert response.status_code == 200, response.text
    expected = {"first_name": "New", "last_name": None, "email": "new@example.com", "phone": None}
    expected |= {"birthday": None, "notes": None}
    assert {name: response.json()[name] for name in EDITABLE} == expected
    row = await contact_row(db, contact.id)
    assert editable(row) == expected
    assert row["created_at"] == before["created_at"]
    assert row["updated_at"] >= before["updated_at"]
    assert row["user_id"] == owner.id


async def test_replace_contact_without_first_name_returns_422(client, db, owner, headers):
    contact = await make_contact(db, owner)
    before = await contact_row(db, contact.id)

    response = await client.put(f"{API}/contacts/{contact.id}", json={"last_name": "Only"}, headers=headers)

    assert_error(response, 422, "ValidationError")
    assert await contact_row(db, contact.id) == before


async def test_replace_contact_with_email_of_another_own_contact_returns_409(client, db, owner, headers):
    await make_contact(db, owner, email="taken@example.com")
    contact = await make_contact(db, owner, email="mine@example.com")
    before = await contact_row(db, contact.id)

    response = await client.put(
        f"{API}/contacts/{contact.id}", json={"first_name": "X", "email": "Taken@Example.com"}, headers=headers
    )

    assert_error(response, 409, "ContactEmailExists")
    assert await contact_row(db, contact.id) == before


async def test_replace_missing_contact_returns_404(client, db, owner, headers):
    response = await client.put(f"{API}/contacts/12345", json={"first_name": "Ghost"}, headers=headers)

    assert_error(response, 404, "ContactNotFound")
    assert await contact_count(db) == 0


# -- update (PATCH) ----------------------------------------------------------------------------------------


async def test_update_contact_changes_only_sent_fields(client, db, owner, headers):
    contact = await make_contact(db, owner, first_name="Ada", last_name="Byron", phone="123", notes="keep")
    before = await contact_row(db, contact.id)

    response = await client.patch(
        f"{API}/contacts/{contact.id}", json={"last_name": "Lovelace", "birthday": "1815-12-10"}, headers=headers
    )

    assert response.status_code == 200, response.text
    expected = editable(before) | {"last_name": "Lovelace", "birthday": "1815-12-10"}
    assert {name: response.json()[name] for name in EDITABLE} == expected
    row = await contact_row(db, contact.id)
    assert editable(row) == expected
    assert row["created_at"] == before["created_at"]
    assert row["updated_at"] > before["updated_at"]


async def test_update_contact_to_null_clears_that_field(client, db, owner, headers):
    contact = await make_contact(db, owner, phone="123", notes="keep")

    response = await client.patch(f"{API}/contacts/{contact.id}", json={"phone": None}, headers=headers)

    assert response.status_code == 200, response.text
    row = await contact_row(db, contact.id)
    assert (row["phone"], row["notes"]) == (None, "keep")


async def test_update_contact_first_name_to_null_returns_422(client, db, owner, headers):
    contact = await make_contact(db, owner, first_name="Ada")
    before = await contact_row(db, contact.id)

    response = await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": None}, headers=headers)

    detail = assert_error(response, 422, "ValidationError")["detail"]
    assert any("first_name" in err["msg"] or "first_name" in err["loc"] for err in detail), detail
    assert await contact_row(db, contact.id) == before


async def test_update_contact_with_email_of_another_own_contact_returns_409(client, db, owner, headers):
    await make_contact(db, owner, email="taken@example.com")
    contact = await make_contact(db, owner, email="mine@example.com")
    before = await contact_row(db, contact.id)

    response = await client.patch(f"{API}/contacts/{contact.id}", json={"email": "TAKEN@example.com"}, headers=headers)

    assert_error(response, 409, "ContactEmailExists")
    assert await contact_row(db, contact.id) == before


async def test_update_contact_email_to_other_case_of_its_own_returns_200(client, db, owner, headers):
    contact = await make_contact(db, owner, email="mine@example.com")

    response = await client.patch(f"{API}/contacts/{contact.id}", json={"email": "Mine@example.com"}, headers=headers)

    assert response.status_code == 200, response.text
    assert (await contact_row(db, contact.id))["email"] == "Mine@example.com"


async def test_update_contact_with_empty_body_changes_nothing(client, db, owner, headers):
    contact = await make_contact(db, owner, phone="123", notes="keep")
    before = await contact_row(db, contact.id)

    response = await client.patch(f"{API}/contacts/{contact.id}", json={}, headers=headers)

    assert response.status_code == 200, response.text
    assert {name: response.json()[name] for name in EDITABLE} == editable(before)
    assert await contact_row(db, contact.id) == before


async def test_read_after_update_returns_new_values(client, db, owner, headers):
    contact = await make_contact(db, owner, first_name="Before")
    assert (await client.get(f"{API}/contacts/{contact.id}", headers=headers)).json()["first_name"] == "Before"

    patched = await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": "After"}, headers=headers)
    assert patched.status_code == 200, patched.text

    response = await client.get(f"{API}/contacts/{contact.id}", headers=headers)
    assert response.json()["first_name"] == "After"
    assert response.json() == patched.json()


async def test_update_missing_contact_returns_404(client, db, owner, headers):
    response = await client.patch(f"{API}/contacts/12345", json={"first_name": "Ghost"}, headers=headers)

    assert_error(response, 404, "ContactNotFound")


# -- delete ------------------------------------------------------------------------------------------------


async def test_delete_contact_returns_204_and_moves_it_to_the_trash(client, db, owner, headers):
    contact = await make_contact(db, owner)
    keep = await make_contact(db, owner)
    assert (await client.get(f"{API}/contacts/{contact.id}", headers=headers)).status_code == 200  # cached

    response = await client.delete(f"{API}/contacts/{contact.id}", headers=headers)

    assert response.status_code == 204, response.text
    assert response.content == b""
    # Since model v2 a deleted contact goes to the trash (restorable) instead of being removed at once.
    assert (await contact_row(db, contact.id))["deleted_at"] is not None
    assert (await contact_row(db, keep.id))["deleted_at"] is None
    assert_error(await client.get(f"{API}/contacts/{contact.id}", headers=headers), 404, "ContactNotFound")


async def test_delete_missing_contact_returns_404(client, db, owner, headers):
    contact = await make_contact(db, owner)
    assert (await client.delete(f"{API}/contacts/{contact.id}", headers=headers)).status_code == 204

    response = await client.delete(f"{API}/contacts/{contact.id}", headers=headers)

    assert_error(response, 404, "ContactNotFound")


# -- list and search ---------------------------------------------------------------------------------------


async def test_list_contacts_returns_page_in_id_order(client, db, owner, headers):
    ids = [(await make_contact(db, owner, first_name=name)).id for name in ("Zed", "Amy", "Max")]

    response = await client.get(f"{API}/contacts", headers=headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "total", "skip", "limit", "next_cursor"}
    assert (body["total"], body["skip"], body["limit"], body["next_cursor"]) == (3, 0, 20, None)
    assert [item["id"] for item in body["items"]] == sorted(ids)
    assert all(set(item) == CONTACT_FIELDS for item in body["items"])


async def test_list_contacts_defaults_to_20_per_page(client, db, owner, headers):
    ids = [(await make_contact(db, owner)).id for _ in range(23)]

    first = (await client.get(f"{API}/contacts", headers=headers)).json()
    rest = (await client.get(f"{API}/contacts", params={"skip": 20}, headers=headers)).json()

    assert [item["id"] for item in first["items"]] == sorted(ids)[:20]
    assert [item["id"] for item in rest["items"]] == sorted(ids)[20:]
    assert first["total"] == rest["total"] == 23


async def test_list_contacts_pages_by_skip_and_limit(client, db, owner, headers):
    ids = sorted([(await make_contact(db, owner)).id for _ in range(7)])

    response = await client.get(f"{API}/contacts", params={"skip": 2, "limit": 3}, headers=headers)

    body = response.json()
    assert [item["id"] for item in body["items"]] == ids[2:5]
    assert (body["total"], body["skip"], body["limit"]) == (7, 2, 3)


async def test_list_contacts_every_page_matches_id_order_from_either_end(client, db, owner, headers):
    # Pages past the middle are read backwards from the end (app/contacts/repository.py): each page, whichever
    # way it is read, is the same slice of the id order, including the pages that run past the end.
    matching = [(await make_contact(db, owner, first_name=f"Page{n}")).id for n in range(7)]
    everyone = sorted([*matching, (await make_contact(db, owner, first_name="Other")).id])

    wrong = {}
    for q, expected in ((None, everyone), ("page", sorted(matching))):
        for skip in range(len(expected) + 2):
            for limit in (1, 2, 3, 5):
                params = {"skip": skip, "limit": limit} | ({"q": q} if q else {})
                body = (await client.get(f"{API}/contacts", params=params, headers=headers)).json()
                page = ([item["id"] for item in body["items"]], body["total"])
                if page != (expected[skip : skip + limit], len(expected)):
                    wrong[(q, skip, limit)] = page

    assert wrong == {}


async def test_contact_total_follows_creates_and_deletes(client, db, owner, headers, settings):
    made = [await client.post(f"{API}/contacts", json={"first_name": f"N{n}"}, headers=headers) for n in range(3)]
    await client.delete(f"{API}/contacts/{made[0].json()['id']}", headers=headers)
    await client.delete(f"{API}/contacts/{made[0].json()['id']}", headers=headers)  # already gone: 404, no change
    other = await make_user(db, settings)
    await make_contact(db, other)

    body = (await client.get(f"{API}/contacts", headers=headers)).json()

    assert body["total"] == 2
    assert [item["id"] for item in body["items"]] == [made[1].json()["id"], made[2].json()["id"]]
    stored = await db.scalar(select(ContactCount.contacts).where(ContactCount.user_id == owner.id))
    assert stored == 2


async def test_list_contacts_accepts_limit_100(client, db, owner, headers):
    await make_contact(db, owner)

    response = await client.get(f"{API}/contacts", params={"limit": 100}, headers=headers)

    assert response.status_code == 200, response.text
    assert (response.json()["limit"], response.json()["total"]) == (100, 1)


async def test_list_contacts_skip_past_end_returns_empty_items(client, db, owner, headers):
    await make_contact(db, owner)

    body = (await client.get(f"{API}/contacts", params={"skip": 5}, headers=headers)).json()

    assert (body["items"], body["total"], body["skip"]) == ([], 1, 5)


async def test_list_contacts_includes_contact_created_after_earlier_list(client, db, owner, headers):
    await make_contact(db, owner)
    assert (await client.get(f"{API}/contacts", headers=headers)).json()["total"] == 1  # cached page

    created = await client.post(f"{API}/contacts", json={"first_name": "Late"}, headers=headers)
    assert created.status_code == 201

    body = (await client.get(f"{API}/contacts", headers=headers)).json()
    assert body["total"] == 2
    assert body["items"][-1]["id"] == created.json()["id"]


@pytest.fixture
async def people(db, owner):
    """Contacts to search, by first name."""
    rows = [
        ("Ada", "Lovelace", "ada@engine.example"),
        ("Grace", "Hopper", "grace@navy.example"),
        ("Alan", "Turing", "alan@bletchley.example"),
        ("Hopper", "Fan", None),
        ("100%", "Pure", None),
        ("100x", "Impure", None),
        ("under_score", "Kid", None),
        ("underXscore", "Lookalike", None),
        ("Émile", "Zola", "emile@paris.example"),
    ]
    return {
        first: await make_contact(db, owner, first_name=first, last_name=last, email=email)
        for first, last, email in rows
    }


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("ada", ["Ada"]),
        ("LOVE", ["Ada"]),
        ("hopper", ["Grace", "Hopper"]),
        ("BLETCHLEY", ["Alan"]),
        ("@navy.", ["Grace"]),
        ("ur", ["Alan", "100%", "100x"]),
        ("%", ["100%"]),
        ("0%", ["100%"]),
        ("_", ["under_score"]),
        ("r_s", ["under_score"]),
        ("ÉMI", ["Émile"]),
        ("émile", ["Émile"]),
        ("nobody", []),
    ],
)
async def test_search_contacts_matches_names_and_email_case_insensitively(client, people, headers, q, expected):
    response = await client.get(f"{API}/contacts", params={"q": q}, headers=headers)

    assert response.status_code == 200, response.text
    body = response.json()
    found = [item["first_name"] for item in body["items"]]
    assert sorted(found) == sorted(expected)
    assert body["total"] == len(expected)
    assert [item["id"] for item in body["items"]] == sorted(item["id"] for item in body["items"])


async def test_search_contacts_pages_matches(client, db, owner, headers):
    ids = [(await make_contact(db, owner, first_name=f"Match{n}")).id for n in range(5)]
    await make_contact(db, owner, first_name="Other")

    body = (await client.get(f"{API}/contacts", params={"q": "match", "skip": 1, "limit": 2}, headers=headers)).json()

    assert [item["id"] for item in body["items"]] == sorted(ids)[1:3]
    assert body["total"] == 5


async def test_search_finds_contact_after_rename(client, db, owner, headers):
    contact = await make_contact(db, owner, first_name="Before", email=None)
    assert (await client.get(f"{API}/contacts", params={"q": "after"}, headers=headers)).json()["total"] == 0

    await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": "Afterwards"}, headers=headers)

    body = (await client.get(f"{API}/contacts", params={"q": "after"}, headers=headers)).json()
    assert [item["id"] for item in body["items"]] == [contact.id]


# -- upcoming birthdays ------------------------------------------------------------------------------------


def today_utc() -> date:
    return datetime.now(UTC).date()


def born_on_day_of(day: date) -> date:
    """A past birthday falling on `day`'s month and day (2000 is a leap year, so Feb 29 works too)."""
    return date(2000, day.month, day.day)


def days_until(today: date, birthday: date) -> int:
    for year in (today.year, today.year + 1):
        day = birthday.day if (birthday.month, birthday.day) != (2, 29) or calendar.isleap(year) else 28
        next_one = date(year, birthday.month, day)
        if next_one >= today:
            return (next_one - today).days
    raise AssertionError("unreachable")


@pytest.fixture
async def birthday_people(db, owner):
    today = today_utc()
    offsets = {"Today": 0, "Tomorrow": 1, "InThree": 3, "InSeven": 7, "InEight": 8, "Yesterday": -1}
    made = {}
    for name, offset in offsets.items():
        made[name] = await make_contact(db, owner, first_name=name, birthday=born_on_day_of(today + timedelta(offset)))
    made["NoBirthday"] = await make_contact(db, owner, first_name="NoBirthday", birthday=None)
    return made


async def test_birthdays_default_to_next_7_days_today_included_soonest_first(client, birthday_people, headers):
    today = today_utc()

    response = await client.get(f"{API}/contacts/birthdays", headers=headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "total", "skip", "limit"}
    expected = sorted(
        (days_until(today, c.birthday), name)
        for name, c in birthday_people.items()
        if c.birthday and days_until(today, c.birthday) <= 7
    )
    found = [(days_until(today, date.fromisoformat(i["birthday"])), i["first_name"]) for i in body["items"]]
    assert {name for _, name in found} == {name for _, name in expected}
    assert {"Today", "InSeven"} <= {name for _, name in found}
    assert [wait for wait, _ in found] == sorted(wait for wait, _ in found)
    assert (body["total"], body["skip"], body["limit"]) == (len(expected), 0, 20)


async def test_birthdays_with_zero_days_returns_only_todays(client, birthday_people, headers):
    response = await client.get(f"{API}/contacts/birthdays", params={"days": 0}, headers=headers)

    assert response.status_code == 200, response.text
    assert [item["first_name"] for item in response.json()["items"]] == ["Today"]


async def test_birthdays_with_365_days_returns_every_birthday(client, birthday_people, headers):
    response = await client.get(f"{API}/contacts/birthdays", params={"days": 365}, headers=headers)

    body = response.json()
    names = [item["first_name"] for item in body["items"]]
    assert sorted(names) == sorted(n for n in birthday_people if n != "NoBirthday")
    assert names[0] == "Today"
    assert names[-1] == "Yesterday"


async def test_birthdays_include_contact_whose_birthday_was_set_after_earlier_query(client, db, owner, headers):
    contact = await make_contact(db, owner, birthday=None)
    assert (await client.get(f"{API}/contacts/birthdays", headers=headers)).json()["total"] == 0

    patched = await client.patch(
        f"{API}/contacts/{contact.id}", json={"birthday": born_on_day_of(today_utc()).isoformat()}, headers=headers
    )
    assert patched.status_code == 200

    body = (await client.get(f"{API}/contacts/birthdays", headers=headers)).json()
    assert [item["id"] for item in body["items"]] == [contact.id]


# -- health ------------------------------------------------------------------------------------------------


async def test_health_reports_database_and_cache_ok(client):
    response = await client.get("/health")

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"status", "database", "cache"}
    assert body["status"] == "ok"
    assert body["database"] == {"ok": True}
    assert set(body["cache"]) == {"backend", "ok"}
    assert body["cache"]["ok"] is True
    assert isinstance(body["cache"]["backend"], str)
    assert body["cache"]["backend"]


async def test_birthday_pages_match_the_whole_list_from_either_end(client, birthday_people, db, owner, headers):
    # Two people share a birthday, so the order within one day (by id) counts too; the year wraps at "Yesterday".
    today = today_utc()
    await make_contact(db, owner, first_name="AlsoTomorrow", birthday=born_on_day_of(today + timedelta(1)))
    whole = (await client.get(f"{API}/contacts/birthdays", params={"days": 365, "limit": 100}, headers=headers)).json()
    order = [item["id"] for item in whole["items"]]
    assert whole["total"] == len(order) == 7

    wrong = {}
    for skip in range(len(order) + 2):
        for limit in (1, 2, 3):
            params = {"days": 365, "skip": skip, "limit": limit}
            body = (await client.get(f"{API}/contacts/birthdays", params=params, headers=headers)).json()
            if [item["id"] for item in body["items"]] != order[skip : skip + limit] or body["total"] != 7:
                wrong[(skip, limit)] = body

    assert wrong == {}
