"""The address book's pages through httpx, without JavaScript: list with search, filters, sorting and cursor paging;
create and edit with several emails, phones and addresses; If-Match as "changed elsewhere, reload"; trash and
restore; birthdays; and another user's contact out of reach."""

from __future__ import annotations

import re
from datetime import date, timedelta

from sqlalchemy import select

from app.contacts.models import Contact
from tests.factories import auth_headers, make_contact, make_user
from tests.web_helpers import csrf_of, page_token, web_login

API = "/api/v1"


def names_in(page_text: str) -> list[str]:
    return re.findall(r'<a href="/contacts/\d+">([^<]+)</a>', page_text)


async def create_by_page(client, **fields: str) -> int:
    token = await page_token(client, "/contacts/new")
    response = await client.post("/contacts/new", data={"csrf_token": token, **fields})
    assert response.status_code == 303, response.text
    found = re.fullmatch(r"/contacts/(\d+)\?notice=saved", response.headers["location"])
    assert found, response.headers
    return int(found.group(1))


async def test_create_a_contact_with_several_phones_emails_and_an_address(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    contact_id = await create_by_page(
        client,
        first_name="Ada",
        last_name="Lovelace",
        **{
            "emails-0-value": "ada@example.com",
            "emails-0-label": "work",
            "emails-1-value": "",  # a blank row is left out
            "phones-0-value": "+44 20 7946 0958",
            "phones-0-label": "work",
            "phones-1-value": "+44 7700 900123",
            "phones-1-label": "mobile",
            "addresses-0-street": "12 St James's Square",
            "addresses-0-locality": "London",
            "addresses-0-country": "United Kingdom",
            "labels": "family, science",
            "favorite": "on",
            "birthday": "1815-12-10",
        },
    )
    api = await client.get(f"{API}/contacts/{contact_id}", headers=auth_headers(settings, user))
    body = api.json()
    assert [e["value"] for e in body["emails"]] == ["ada@example.com"]
    assert [p["value"] for p in body["phones"]] == ["+44 20 7946 0958", "+44 7700 900123"]
    assert body["phones"][1]["label"] == "mobile"
    assert body["addresses"][0]["locality"] == "London"
    assert body["labels"] == ["family", "science"]
    assert body["favorite"] is True
    assert body["birthday"] == "1815-12-10"
    page = await client.get(f"/contacts/{contact_id}?notice=saved")
    assert page.status_code == 200
    assert "Ada Lovelace" in page.text
    assert "+44 7700 900123" in page.text
    assert '<span class="initials" aria-hidden="true">AL</span>' in page.text


async def test_refused_fields_are_said_in_words_beside_them_and_nothing_is_stored(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    token = await page_token(client, "/contacts/new")
    response = await client.post(
        "/contacts/new",
        data={
            "csrf_token": token,
            "first_name": "",
            "emails-0-value": "not an email",
            "phones-0-value": "+44 20 7946 0958",
            "phones-1-value": "call me",
            "birthday": "2999-01-01",
        },
    )
    assert response.status_code == 400
    assert re.search(r'id="f-first_name-error">Enter a first name.<', response.text)
    assert re.search(r'id="f-emails-0-value-error">Enter an email address like name@example.com.<', response.text)
    assert re.search(r'id="f-phones-1-value-error">Enter a phone number with digits', response.text)
    assert re.search(r'id="f-birthday-error">Birthday', response.text)
    assert 'value="call me"' in response.text  # what was typed stays
    assert (await db.execute(select(Contact))).scalars().all() == []


async def test_add_another_row_without_javascript_keeps_what_was_typed(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    token = await page_token(client, "/contacts/new")
    data = {"csrf_token": token, "first_name": "Ada", "phones-0-value": "1", "phones-1-value": "2", "more": "phones"}
    response = await client.post("/contacts/new", data=data)
    assert response.status_code == 200
    assert 'value="Ada"' in response.text
    assert 'name="phones-2-value"' in response.text
    assert 'name="phones-3-value"' in response.text  # two filled rows, two blank ones (one more than usual)
    assert (await db.execute(select(Contact))).scalars().all() == []


async def test_edit_saves_and_removes_entries(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    contact_id = await create_by_page(
        client, first_name="Ada", **{"phones-0-value": "+44 20 7946 0958", "phones-1-value": "+44 7700 900123"}
    )
    form = await client.get(f"/contacts/{contact_id}/edit")
    etag = re.search(r'name="etag" value="([^"]+)"', form.text)
    assert etag
    assert etag.group(1) == f"&#34;{contact_id}-1&#34;"  # the version the form was opened on
    response = await client.post(
        f"/contacts/{contact_id}/edit",
        data={
            "csrf_token": csrf_of(form),
            "etag": f'"{contact_id}-1"',
            "first_name": "Augusta Ada",
            "phones-0-value": "+44 20 7946 0958",
            "phones-1-value": "+44 7700 900123",
            "phones-1-remove": "on",
            "phones-2-value": "+1 202 555 0143",
        },
    )
    assert response.status_code == 303, response.text
    api = (await client.get(f"{API}/contacts/{contact_id}", headers=auth_headers(settings, user))).json()
    assert api["first_name"] == "Augusta Ada"
    assert [p["value"] for p in api["phones"]] == ["+44 20 7946 0958", "+1 202 555 0143"]


async def test_edit_of_a_contact_changed_elsewhere_says_reload_and_overwrites_nothing(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    contact_id = await create_by_page(client, first_name="Ada")
    form = await client.get(f"/contacts/{contact_id}/edit")
    # Meanwhile another client (the API) changes the contact.
    changed = await client.patch(
        f"{API}/contacts/{contact_id}", json={"first_name": "Changed"}, headers=auth_headers(settings, user)
    )
    assert changed.status_code == 200
    response = await client.post(
        f"/contacts/{contact_id}/edit",
        data={"csrf_token": csrf_of(form), "etag": f'"{contact_id}-1"', "first_name": "Mine"},
    )
    assert response.status_code == 412
    assert "Changed elsewhere" in response.text
    assert f'href="/contacts/{contact_id}/edit">reload the latest version' in response.text
    assert 'value="Mine"' in response.text  # the typed change is shown, not lost silently
    api = (await client.get(f"{API}/contacts/{contact_id}", headers=auth_headers(settings, user))).json()
    assert api["first_name"] == "Changed"


async def test_delete_to_trash_and_restore(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    contact_id = await create_by_page(client, first_name="Grace", last_name="Hopper")
    page = await client.get(f"/contacts/{contact_id}")
    etag = f'"{contact_id}-1"'
    deleted = await client.post(f"/contacts/{contact_id}/delete", data={"csrf_token": csrf_of(page), "etag": etag})
    assert deleted.status_code == 303
    assert (await client.get(f"/contacts/{contact_id}")).status_code == 404
    assert "Grace Hopper" not in (await client.get("/contacts")).text
    trash = await client.get("/trash")
    assert "Restore Grace Hopper" in trash.text
    restored = await client.post(f"/trash/{contact_id}/restore", data={"csrf_token": csrf_of(trash)})
    assert restored.status_code == 303
    assert restored.headers["location"] == f"/contacts/{contact_id}?notice=restored"
    assert "Grace Hopper" in (await client.get("/contacts")).text
    assert "Restore Grace Hopper" not in (await client.get("/trash")).text


async def test_delete_without_the_forms_token_is_refused(client, db, settings):
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Kept")
    await web_login(client, user.email)
    forged = await client.post(f"/contacts/{contact.id}/delete", data={})
    assert forged.status_code == 403
    assert (await client.get(f"/contacts/{contact.id}")).status_code == 200


async def test_list_search_filters_sort_and_cursor_paging(client, db, settings):
    user = await make_user(db, settings)
    for n in range(30):
        await make_contact(db, user, first_name=f"Person{n:02d}", last_name="Smith", email=f"p{n}@example.com")
    await make_contact(db, user, first_name="Zed", last_name="Alpha", labels=["family"], favorite=True)
    await web_login(client, user.email)
    first = await client.get("/contacts", params={"sort": "name"})
    names = names_in(first.text)
    assert len(names) == 25
    assert names[0] == "Zed Alpha"  # last name first
    more = re.search(r'<li id="more"><a href="([^"]+)"', first.text)
    assert more
    second = await client.get(more.group(1).replace("&amp;", "&"))
    rest = names_in(second.text)
    assert len(rest) == 6
    assert not set(rest) & set(names)
    assert 'id="more"' not in second.text
    found = await client.get("/contacts", params={"q": "person07"})
    assert names_in(found.text) == ["Person07 Smith"]
    assert names_in((await client.get("/contacts", params={"label": "family"})).text) == ["Zed Alpha"]
    assert names_in((await client.get("/contacts", params={"favorite": "1"})).text) == ["Zed Alpha"]
    reverse = names_in((await client.get("/contacts", params={"sort": "-name"})).text)
    assert reverse[0] == "Person29 Smith"


async def test_another_users_contact_is_not_found(client, db, settings):
    owner = await make_user(db, settings)
    other = await make_user(db, settings)
    contact = await make_contact(db, owner, first_name="Private")
    await web_login(client, other.email)
    assert (await client.get(f"/contacts/{contact.id}")).status_code == 404
    assert (await client.get(f"/contacts/{contact.id}/edit")).status_code == 404
    token = await page_token(client, "/contacts")
    response = await client.post(f"/contacts/{contact.id}/edit", data={"csrf_token": token, "first_name": "Stolen"})
    assert response.status_code == 404
    await db.refresh(contact)
    assert contact.first_name == "Private"


async def test_birthdays_in_the_next_30_days(client, db, settings):
    user = await make_user(db, settings)
    today = date.today()
    soon = today + timedelta(days=10)
    later = today + timedelta(days=60)
    await make_contact(db, user, first_name="Soon", birthday=soon.replace(year=1992))
    await make_contact(db, user, first_name="Later", birthday=later.replace(year=1992))
    await web_login(client, user.email)
    page = await client.get("/birthdays")
    assert page.status_code == 200
    assert "Soon" in page.text
    assert "Later" not in page.text
