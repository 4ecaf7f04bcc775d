"""Exports through HTTP: vCard 4.0 and 3.0 and Google CSV of the whole book or of a label or search, streamed in
batches, other users' and trashed contacts left out, spreadsheet formulas escaped, and every export read back by
the import as the same contacts."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import vobject

from app.interchange import exporting
from tests.factories import auth_headers, make_contact, make_user

API = "/api/v1"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "interchange"


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings)


@pytest.fixture
def headers(settings, owner):
    return auth_headers(settings, owner)


ADA = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "organization": "Analytical Engines",
    "emails": [{"value": "ada@example.com", "label": "work"}, {"value": "ada@home.example", "label": "Salon"}],
    "phones": [{"value": "+44 20 7946 0958", "label": "mobile"}],
    "addresses": [{"label": "home", "street": "12 St James's Square", "locality": "London", "country": "UK"}],
    "labels": ["family", "Maths"],
    "favorite": True,
    "birthday": "1815-12-10",
    "notes": '=HYPERLINK("http://evil.example")',
}


async def create(client, headers, **body) -> dict:
    response = await client.post(f"{API}/contacts", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def export(client, headers, **params) -> str:
    response = await client.get(f"{API}/contacts/export", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.text


async def test_vcard_40_export_has_every_field(client, headers):
    ada = await create(client, headers, **ADA)

    response = await client.get(f"{API}/contacts/export", params={"format": "vcard"}, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/vcard; charset=utf-8"
    assert 'filename="contacts.vcf"' in response.headers["content-disposition"]
    card = vobject.readOne(response.text)
    assert card.version.value == "4.0"
    assert card.uid.value == ada["uid"]
    assert (card.n.value.family, card.n.value.given) == ("Lovelace", "Ada")
    assert card.fn.value == "Ada Lovelace"
    emails = card.contents["email"]
    assert [(e.value, e.params.get("PREF"), e.params.get("TYPE"), e.group) for e in emails] == [
        ("ada@example.com", ["1"], ["work"], None),
        ("ada@home.example", None, None, "item1"),
    ]
    assert card.contents["x-ablabel"][0].value == "Salon"
    assert card.tel.params["TYPE"] == ["cell"]
    assert card.bday.value == "18151210"
    assert card.categories.value == ["family", "Maths"]
    assert card.adr.value.city == "London"


async def test_vcard_30_export_uses_30_types_and_dates(client, headers):
    await create(client, headers, **ADA)

    card = vobject.readOne(await export(client, headers, format="vcard", version="3.0"))

    assert card.version.value == "3.0"
    assert card.contents["email"][0].params["TYPE"] == ["internet", "work", "pref"]
    assert card.bday.value == "1815-12-10"


async def test_export_selects_by_label_or_search_and_leaves_out_trash_and_other_users(client, db, settings, headers):
    await create(client, headers, **ADA)
    await create(client, headers, first_name="Charles", last_name="Babbage", labels=["Maths"])
    gone = await create(client, headers, first_name="Gone", labels=["Maths"])
    await create(client, headers, first_name="Mary", last_name="Somerville")
    assert (await client.delete(f"{API}/contacts/{gone['id']}", headers=headers)).status_code == 204
    stranger = await make_user(db, settings)
    await make_contact(db, stranger, first_name="Stranger", labels=["Maths"])

    def names(text: str) -> list[str]:
        return [card.fn.value for card in vobject.readComponents(text)]

    assert names(await export(client, headers, format="vcard")) == [
        "Ada Lovelace",
        "Charles Babbage",
        "Mary Somerville",
    ]
    assert names(await export(client, headers, format="vcard", label="Maths")) == ["Ada Lovelace", "Charles Babbage"]
    assert names(await export(client, headers, format="vcard", q="somer")) == ["Mary Somerville"]
    assert await export(client, headers, format="vcard", label="nobody") == ""


async def test_google_csv_export_escapes_formulas_and_reads_back_as_the_same_contacts(client, headers):
    ada = await create(client, headers, **ADA)
    await create(client, headers, first_name="@risky", last_name="-minus", phones=[{"value": "+1 202 555 0100"}])

    response = await client.get(f"{API}/contacts/export", params={"format": "csv"}, headers=headers)

    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert list(rows[0])[:3] == ["First Name", "Middle Name", "Last Name"]
    assert "E-mail 2 - Value" in rows[0]
    assert "E-mail 3 - Value" not in rows[0]
    assert rows[0]["Notes"] == '\'=HYPERLINK("http://evil.example")'
    assert rows[0]["Labels"] == "family ::: Maths ::: * myContacts ::: * starred"
    assert rows[0]["E-mail 1 - Label"] == "* Work"
    assert (rows[0]["Custom Field 1 - Label"], rows[0]["Custom Field 1 - Value"]) == ("UID", ada["uid"])
    assert (rows[1]["First Name"], rows[1]["Last Name"], rows[1]["Phone 1 - Value"]) == (
        "'@risky",
        "'-minus",
        "'+1 202 555 0100",
    )
    before = (await client.get(f"{API}/contacts", headers=headers)).json()["items"]

    report = await client.post(
        f"{API}/contacts/import", content=response.content, headers={**headers, "Content-Type": "text/csv"}
    )

    assert report.json()["unchanged"] == 2, report.text
    assert (await client.get(f"{API}/contacts", headers=headers)).json()["items"] == before


async def test_export_streams_the_book_in_batches(client, db, owner, headers, app, monkeypatch):
    monkeypatch.setattr(exporting, "EXPORT_BATCH", 7)
    for n in range(20):
        await make_contact(db, owner, first_name=f"P{n:02}")

    chunks = [
        chunk async for chunk in exporting.export_stream(app.state.db.sessionmaker, owner.id, "vcard", version="4.0")
    ]

    assert [chunk.count(b"BEGIN:VCARD") for chunk in chunks] == [7, 7, 6]
    cards = list(vobject.readComponents(b"".join(chunks).decode()))
    assert [card.n.value.given for card in cards] == [f"P{n:02}" for n in range(20)]


async def test_export_needs_a_known_format(client, headers):
    response = await client.get(f"{API}/contacts/export", params={"format": "xml"}, headers=headers)

    assert response.status_code == 422


async def test_a_vcard_that_came_in_goes_out_with_its_other_properties_and_reads_back_unchanged(client, headers):
    body = (FIXTURES / "icloud.vcf").read_bytes()
    imported = await client.post(
        f"{API}/contacts/import", content=body, headers={**headers, "Content-Type": "text/vcard"}
    )
    assert imported.json()["created"] == 2

    exported = await export(client, headers, format="vcard", version="3.0")

    johnny = next(card for card in vobject.readComponents(exported) if card.fn.value == "Johnny Appleseed")
    assert johnny.photo.params["TYPE"] == ["JPEG"]
    assert johnny.photo.value == vobject.readOne(body.decode().split("END:VCARD")[0] + "END:VCARD\r\n").photo.value
    related = johnny.contents["x-abrelatednames"][0]
    assert (related.value, related.group) == ("Jane Appleseed", "item4")
    assert [line.value for line in johnny.contents["x-ablabel"] if line.group == "item4"] == ["_$!<Spouse>!$_"]
    assert johnny.contents["x-abuid"][0].value == "5AD380FD-B2DE-4261-BA99-DE1D1DB52FBE:ABPerson"
    emails = {line.value: line.group for line in johnny.contents["email"]}
    labels = {line.group: line.value for line in johnny.contents["x-ablabel"]}
    assert labels[emails["jappleseed@orchard.example"]] == "Orchard"

    again = await client.post(
        f"{API}/contacts/import", content=exported.encode(), headers={**headers, "Content-Type": "text/vcard"}
    )

    assert (again.json()["unchanged"], again.json()["created"], again.json()["updated"]) == (2, 0, 0)


@pytest.mark.parametrize("version", ["4.0", "3.0"])
async def test_every_field_survives_a_vcard_export_and_import_into_another_book(client, db, settings, headers, version):
    ada = await create(client, headers, **ADA)
    other = auth_headers(settings, await make_user(db, settings))

    exported = await export(client, headers, format="vcard", version=version)
    report = await client.post(
        f"{API}/contacts/import", content=exported.encode(), headers={**other, "Content-Type": "text/vcard"}
    )

    assert report.json()["created"] == 1, report.text
    copy = (await client.get(f"{API}/contacts", headers=other)).json()["items"][0]
    fields = [k for k in ada if k not in ("id", "user_id", "etag", "created_at", "updated_at")]
    assert {k: copy[k] for k in fields} == {k: ada[k] for k in fields}
