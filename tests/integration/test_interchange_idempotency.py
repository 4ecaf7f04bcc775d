"""Imports record by record: the same file twice changes nothing the second time; a file in which one card changed
updates that contact alone; matches by UID, else by the same name and a shared email or phone; mode merge, replace
and skip; every write numbered in the change feed and the cache invalidated like any other write."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.contacts.models import Contact
from tests.factories import auth_headers, make_user

API = "/api/v1"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "interchange"

CARDS = """BEGIN:VCARD\r
VERSION:3.0\r
UID:card-1\r
N:One;Anna;;;\r
EMAIL:anna@example.com\r
X-PET:cat\r
END:VCARD\r
BEGIN:VCARD\r
VERSION:3.0\r
UID:card-2\r
N:Two;Ben;;;\r
TEL:+1 202 555 0102\r
END:VCARD\r
BEGIN:VCARD\r
VERSION:3.0\r
N:Three;Cleo;;;\r
EMAIL:cleo@example.com\r
END:VCARD\r
"""


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings)


@pytest.fixture
def headers(settings, owner):
    return auth_headers(settings, owner)


async def send(client, headers, text: str, mode: str = "merge") -> dict:
    response = await client.post(
        f"{API}/contacts/import",
        params={"mode": mode},
        content=text.encode(),
        headers={**headers, "Content-Type": "text/vcard"},
    )
    assert response.status_code == 200, response.text
    return {k: v for k, v in response.json().items() if k in ("created", "updated", "unchanged", "skipped")}


async def rows(db) -> dict[str, tuple[int, int]]:
    """Each contact's (version, change_seq) by first name."""
    found = await db.execute(select(Contact.first_name, Contact.version, Contact.change_seq))
    return {name: (version, seq) for name, version, seq in found.all()}


@pytest.mark.parametrize("mode", ["merge", "replace", "skip"])
async def test_the_same_file_twice_changes_nothing_the_second_time(client, db, headers, mode):
    assert await send(client, headers, CARDS, mode) == {"created": 3, "updated": 0, "unchanged": 0, "skipped": 0}
    before = await rows(db)

    second = await send(client, headers, CARDS, mode)

    expected = {"created": 0, "updated": 0, "unchanged": 3, "skipped": 0}
    if mode == "skip":
        expected = {"created": 0, "updated": 0, "unchanged": 0, "skipped": 3}
    assert second == expected
    db.expire_all()
    assert await rows(db) == before
    assert await db.scalar(select(func.count()).select_from(Contact)) == 3


async def test_a_changed_card_updates_that_contact_alone(client, db, headers):
    await send(client, headers, CARDS)
    before = await rows(db)
    changed = CARDS.replace("TEL:+1 202 555 0102", "TEL:+1 202 555 0199\r\nTITLE:Pilot")

    assert await send(client, headers, changed) == {"created": 0, "updated": 1, "unchanged": 2, "skipped": 0}

    db.expire_all()
    after = await rows(db)
    assert after["Anna"] == before["Anna"]
    assert after["Cleo"] == before["Cleo"]
    assert after["Ben"][0] == before["Ben"][0] + 1
    assert after["Ben"][1] > max(seq for _, seq in before.values())
    ben = (await client.get(f"{API}/contacts", params={"q": "ben"}, headers=headers)).json()["items"][0]
    # merge: the new number is added, the old one kept.
    assert [p["value"] for p in ben["phones"]] == ["+1 202 555 0102", "+1 202 555 0199"]
    assert ben["job_title"] == "Pilot"


async def test_replace_makes_the_contact_the_card_and_skip_leaves_it(client, headers):
    await send(client, headers, CARDS)
    changed = CARDS.replace("TEL:+1 202 555 0102", "TEL:+1 202 555 0199")

    assert (await send(client, headers, changed, "skip"))["skipped"] == 3
    ben = (await client.get(f"{API}/contacts", params={"q": "ben"}, headers=headers)).json()["items"][0]
    assert [p["value"] for p in ben["phones"]] == ["+1 202 555 0102"]

    assert (await send(client, headers, changed, "replace"))["updated"] == 1
    ben = (await client.get(f"{API}/contacts", params={"q": "ben"}, headers=headers)).json()["items"][0]
    assert [p["value"] for p in ben["phones"]] == ["+1 202 555 0199"]


async def test_without_uid_a_record_matches_by_name_and_a_shared_email_or_phone(client, headers):
    await send(client, headers, CARDS)
    same_cleo = "BEGIN:VCARD\r\nVERSION:3.0\r\nN:three;CLEO;;;\r\nEMAIL:CLEO@example.com\r\nNOTE:hi\r\nEND:VCARD\r\n"
    other_cleo = "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Three;Cleo;;;\r\nEMAIL:cleo@elsewhere.example\r\nEND:VCARD\r\n"

    assert (await send(client, headers, same_cleo))["updated"] == 1
    assert (await send(client, headers, other_cleo))["created"] == 1

    cleos = (await client.get(f"{API}/contacts", params={"q": "cleo"}, headers=headers)).json()["items"]
    assert [(c["notes"], c["emails"][0]["value"]) for c in cleos] == [
        ("hi", "cleo@example.com"),
        (None, "cleo@elsewhere.example"),
    ]


async def test_import_writes_invalidate_the_cached_contact_and_list(client, headers):
    await send(client, headers, CARDS)
    listed = (await client.get(f"{API}/contacts", headers=headers)).json()  # cached now
    anna = next(c for c in listed["items"] if c["first_name"] == "Anna")
    assert (await client.get(f"{API}/contacts/{anna['id']}", headers=headers)).json()["notes"] is None

    await send(client, headers, CARDS.replace("X-PET:cat", "NOTE:new note"))

    assert (await client.get(f"{API}/contacts/{anna['id']}", headers=headers)).json()["notes"] == "new note"
    relisted = (await client.get(f"{API}/contacts", headers=headers)).json()
    assert next(c for c in relisted["items"] if c["first_name"] == "Anna")["notes"] == "new note"


async def test_a_uid_in_the_trash_is_refused_with_its_position(client, headers):
    await send(client, headers, CARDS)
    ben = (await client.get(f"{API}/contacts", params={"q": "ben"}, headers=headers)).json()["items"][0]
    await client.delete(f"{API}/contacts/{ben['id']}", headers=headers)

    response = await client.post(
        f"{API}/contacts/import", content=CARDS.encode(), headers={**headers, "Content-Type": "text/vcard"}
    )

    assert response.json()["refused"] == [
        {"position": 2, "reason": "the contact with this UID is in the trash: restore or purge it first"}
    ]
    assert response.json()["unchanged"] == 2


async def test_every_fixture_imported_twice_is_unchanged_the_second_time(client, headers):
    for name in (
        "icloud.vcf",
        "android.vcf",
        "nextcloud.vcf",
        "thunderbird.vcf",
        "google.vcf",
        "google.csv",
        "outlook.csv",
    ):
        body = (FIXTURES / name).read_bytes()
        files = {"file": (name, body, "application/octet-stream")}
        first = (await client.post(f"{API}/contacts/import", files=files, headers=headers)).json()
        second = (await client.post(f"{API}/contacts/import", files=files, headers=headers)).json()

        assert first["created"] > 0, (name, first)
        assert (second["created"], second["updated"], second["unchanged"]) == (0, 0, first["created"]), name
