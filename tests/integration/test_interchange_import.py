"""Imports through HTTP: files as Google Contacts, iCloud, Outlook, Android, Nextcloud and Thunderbird write them
(tests/fixtures/interchange), counted and read back field by field; encodings; the report; idempotency record by
record (UID, else name and email/phone) under each mode; and bad input refused in bounded memory, nothing stored
touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.contacts.models import Contact
from tests.factories import auth_headers, make_user

API = "/api/v1"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "interchange"


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings)


@pytest.fixture
def headers(settings, owner):
    return auth_headers(settings, owner)


async def upload(client, headers, name: str | None = None, *, data: bytes | None = None, mode: str = "merge", **params):
    body = data if data is not None else (FIXTURES / str(name)).read_bytes()
    files = {"file": (name or "upload", body, "application/octet-stream")}
    return await client.post(f"{API}/contacts/import", params={"mode": mode, **params}, files=files, headers=headers)


async def contacts_of(client, headers) -> dict[str, dict]:
    response = await client.get(f"{API}/contacts", params={"limit": 100}, headers=headers)
    assert response.status_code == 200, response.text
    return {f"{c['first_name']} {c['last_name'] or ''}".strip(): c for c in response.json()["items"]}


async def stored(db) -> int:
    return int(await db.scalar(select(func.count()).select_from(Contact)) or 0)


async def test_icloud_vcard_30_imports_names_labels_photo_and_apple_properties(client, db, headers):
    response = await upload(client, headers, "icloud.vcf")

    assert response.status_code == 200, response.text
    assert response.json() | {"refused": []} == {
        "format": "vcard",
        "layout": None,
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "skipped": 0,
        "refused_count": 0,
        "refused": [],
    }
    people = await contacts_of(client, headers)
    johnny = people["Johnny Appleseed"]
    assert johnny["uid"] == "5AD380FD-B2DE-4261-BA99-DE1D1DB52FBE"
    assert johnny["organization"] == "Apple Inc."
    assert johnny["job_title"] == "Orchardist"
    assert johnny["emails"] == [
        {"value": "johnny@icloud.example", "label": "home", "primary": True},
        {"value": "jappleseed@orchard.example", "label": "Orchard", "primary": False},
    ]
    assert [(p["value"], p["label"], p["primary"]) for p in johnny["phones"]] == [
        ("+1 (408) 555-0100", "mobile", True),
        ("(408) 555-0101", "home", False),
    ]
    assert johnny["addresses"][0] | {"label": None} == {
        "label": None,
        "street": "1 Infinite Loop",
        "locality": "Cupertino",
        "region": "CA",
        "postal_code": "95014",
        "country": "United States",
        "primary": True,
    }
    assert johnny["urls"] == [{"value": "https://orchard.example", "label": "homepage"}]
    assert johnny["birthday"] == "1774-09-26"
    assert johnny["notes"] == "Plants apple trees.\nEverywhere."
    assert sorted(johnny["labels"]) == ["Farmers", "friends"]
    row = await db.scalar(select(Contact.vcard_extra).where(Contact.uid == johnny["uid"]))
    kept = "\n".join(row["lines"])
    assert "PHOTO;ENCODING=b;TYPE=JPEG:" in kept
    assert "item4.X-ABRELATEDNAMES;TYPE=pref:Jane Appleseed" in kept
    assert "item4.X-ABLABEL:_$!<Spouse>!$_" in kept
    assert "X-ABUID:" in kept
    # A company card (empty N): its name is the FN.
    assert people["Orchard Supply Co."]["organization"] == "Orchard Supply Co."


async def test_android_vcard_21_quoted_printable_and_bare_types(client, headers):
    response = await upload(client, headers, "android.vcf")

    assert response.status_code == 200, response.text
    assert (response.json()["created"], response.json()["refused_count"]) == (2, 0)
    joerg = (await contacts_of(client, headers))["Jörg Müller"]
    assert [(p["value"], p["label"], p["primary"]) for p in joerg["phones"]] == [
        ("+49 170 1234567", "mobile", True),
        ("030 1234567", "home", False),
    ]
    assert joerg["emails"] == [{"value": "joerg@example.de", "label": "home", "primary": True}]
    assert joerg["addresses"][0]["street"] == "Straße 1"
    assert joerg["addresses"][0]["country"] == "Deutschland"
    assert joerg["notes"].startswith("Erste Zeile\r\nZweite Zeile mit einem sehr langen Text, der")


async def test_thunderbird_vcard_40_pref_uri_phones_and_anniversary(client, headers):
    response = await upload(client, headers, "thunderbird.vcf")

    assert response.json()["created"] == 1, response.text
    linus = (await contacts_of(client, headers))["Linus Torvalds"]
    assert linus["emails"][0] == {"value": "linus@kernel.example", "label": None, "primary": True}
    assert [(p["value"], p["label"]) for p in linus["phones"]] == [
        ("+358 40 000 0003", "mobile"),
        ("+358-9-000-0002", "work"),
    ]
    assert (linus["birthday"], linus["anniversary"]) == ("1969-12-28", "2000-01-01")


async def test_nextcloud_and_google_vcards_take_categories_as_labels(client, headers):
    assert (await upload(client, headers, "nextcloud.vcf")).json()["created"] == 1
    assert (await upload(client, headers, "google.vcf")).json()["created"] == 1
    people = await contacts_of(client, headers)

    assert (people["Grace Hopper"]["middle_name"], people["Grace Hopper"]["prefix"]) == (
        "Brewster Murray",
        "Rear Admiral",
    )
    assert sorted(people["Grace Hopper"]["labels"]) == ["Computing", "Navy"]
    assert sorted(people["Carla Diaz"]["labels"]) == ["Band", "myContacts"]
    assert people["Carla Diaz"]["phones"][1]["label"] == "Studio"


async def test_google_csv_with_bom_multiline_cells_and_markers(client, headers):
    response = await upload(client, headers, "google.csv")

    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["format"], report["layout"], report["created"]) == ("csv", "google", 2)
    assert report["refused"] == [{"position": 3, "reason": "the record has no name, organisation, email or phone"}]
    people = await contacts_of(client, headers)
    adrian = people["Adrian Abegglen"]
    assert adrian["favorite"] is True
    assert adrian["labels"] == ["coworkers"]
    assert adrian["emails"] == [
        {"value": "adrian@example.ch", "label": "home", "primary": True},
        {"value": "adrian@work.example", "label": "work", "primary": False},
    ]
    assert adrian["notes"] == "Land/Region: Schweiz\nKategorien: Business"
    assert adrian["addresses"][0]["locality"] == "Zürich"
    assert adrian["birthday"] == "1980-04-02"
    assert [p["value"] for p in people["Beatrice Ng"]["phones"]] == ["+1 415 555 0134", "+1 415 555 0135"]
    assert people["Beatrice Ng"]["labels"] == ["friends"]


async def test_outlook_csv_in_windows_1252(client, headers):
    response = await upload(client, headers, "outlook.csv")

    assert response.json()["layout"] == "outlook", response.text
    assert response.json()["created"] == 2
    francois = (await contacts_of(client, headers))["François Lefèvre"]
    assert francois["organization"] == "Société Générale d'Exemple"
    assert francois["birthday"] == "1975-03-14"
    assert sorted(francois["labels"]) == ["Clients", "VIP"]
    assert {p["label"] for p in francois["phones"]} == {"mobile", "work"}
    assert francois["addresses"][0]["locality"] == "Paris"


async def test_utf16_vcard_and_raw_body_with_its_content_type(client, headers):
    body = (FIXTURES / "utf16.vcf").read_bytes()
    response = await client.post(
        f"{API}/contacts/import", content=body, headers={**headers, "Content-Type": "text/vcard"}
    )

    assert response.json()["created"] == 1, response.text
    assert "Søren Østergaard" in await contacts_of(client, headers)
