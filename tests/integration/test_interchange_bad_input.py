"""Bad files: binary garbage, a zip renamed .vcf, a file over the limits, a CSV of 10,000 columns or in an unknown
layout, a broken card among good ones, a card over the size limit, thousands of empty cards. Each answers a clear
4xx (nothing stored touched) or a clear refusal of its record, the others imported."""

from __future__ import annotations

import io
import zipfile

import pytest
from sqlalchemy import select

from app.contacts.models import Contact
from tests.factories import auth_headers, make_contact, make_user

API = "/api/v1"
GOOD = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:good-{n}\r\nN:Good;Card{n};;;\r\nEND:VCARD\r\n"


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings)


@pytest.fixture
def headers(settings, owner):
    return auth_headers(settings, owner)


@pytest.fixture
async def existing(db, owner):
    """A contact already stored, which no refused file may touch."""
    contact = await make_contact(db, owner, first_name="Kept", uid="good-1")
    return contact.id


async def post_file(client, headers, body: bytes, name: str = "contacts.vcf", **params):
    files = {"file": (name, body, "application/octet-stream")}
    return await client.post(f"{API}/contacts/import", params=params, files=files, headers=headers)


async def untouched(db, contact_id: int) -> bool:
    db.expire_all()
    rows = (await db.execute(select(Contact.id, Contact.first_name, Contact.version))).all()
    return [tuple(row) for row in rows] == [(contact_id, "Kept", 1)]


def zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("contacts.vcf", b"BEGIN:VCARD\r\n" + b"\0" * 20_000_000)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (bytes(range(256)) * 64, "ImportNotRecognised"),
        (zip_bomb(), "ImportNotRecognised"),
        (b"\x89PNG\r\n\x1a\n" + bytes(2000), "ImportNotRecognised"),
        (b"", "ImportNotRecognised"),
        (b"just some words\nwith no separators\n", "ImportNotRecognised"),
    ],
    ids=["garbage", "zip-renamed-vcf", "png", "empty", "plain-text"],
)
async def test_a_file_that_is_neither_vcard_nor_csv_answers_415(client, db, headers, existing, body, error):
    response = await post_file(client, headers, body)

    assert response.status_code == 415, response.text
    assert response.json()["error"] == error
    assert await untouched(db, existing)


async def test_a_file_over_the_synchronous_limit_becomes_a_job_and_touches_nothing_yet(
    client, db, settings, headers, existing
):
    body = "".join(GOOD.format(n=n) for n in range(30_000)).encode()
    assert len(body) > settings.import_sync_max_bytes

    response = await post_file(client, headers, body)

    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert await untouched(db, existing)


async def test_a_raw_body_over_the_largest_import_is_refused_before_it_is_read(
    client, db, settings, headers, existing, monkeypatch
):
    monkeypatch.setattr(settings, "import_max_bytes", 64 * 1024)
    response = await client.post(
        f"{API}/contacts/import",
        content=b"BEGIN:VCARD\r\n" + b"X" * (settings.import_max_bytes + 10),
        headers={**headers, "Content-Type": "text/vcard"},
    )

    assert response.status_code == 413
    assert response.json()["error"] == "ImportTooLarge"
    assert await untouched(db, existing)


async def test_a_csv_of_ten_thousand_columns_answers_413(client, db, headers, existing):
    header = ",".join(f"c{n}" for n in range(10_000))
    response = await post_file(client, headers, f"{header}\r\n{',' * 9_999}\r\n".encode(), "wide.csv")

    assert response.status_code == 413
    assert "10000 columns" in response.json()["detail"]
    assert await untouched(db, existing)


async def test_a_csv_in_an_unknown_layout_needs_a_mapping(client, db, headers, existing):
    body = b"Surname;Given;Mail\r\nHopper;Grace;grace@example.com\r\n"
    body = body.replace(b";", b",")

    refused = await post_file(client, headers, body, "people.csv")
    mapped = await post_file(
        client, headers, body, "people.csv", mapping='{"Surname": "last_name", "Given": "first_name", "Mail": "email"}'
    )

    assert refused.status_code == 415
    assert refused.json()["error"] == "ImportLayoutUnknown"
    assert mapped.status_code == 200, mapped.text
    assert (mapped.json()["layout"], mapped.json()["created"]) == ("mapping", 1)
    grace = (await client.get(f"{API}/contacts", params={"q": "grace"}, headers=headers)).json()["items"][0]
    assert (grace["first_name"], grace["last_name"], grace["email"]) == ("Grace", "Hopper", "grace@example.com")


@pytest.mark.parametrize("mapping", ["not json", "[1]", '{"a": "password"}', '{"a": 1}'])
async def test_a_mapping_that_is_not_columns_to_fields_answers_400(client, headers, mapping):
    response = await post_file(client, headers, b"a,b\r\n1,2\r\n", "x.csv", mapping=mapping)

    assert response.status_code == 400
    assert response.json()["error"] == "ImportMappingInvalid"


async def test_a_form_without_the_file_field_answers_415(client, headers):
    response = await client.post(f"{API}/contacts/import", data={"other": "x"}, headers=headers)

    assert response.status_code == 415


async def test_bad_cards_are_refused_one_by_one_and_the_good_ones_imported(client, db, settings, headers):
    photo = "PHOTO;ENCODING=b;TYPE=JPEG:" + "A" * (settings.import_max_record_bytes + 10)
    body = (
        GOOD.format(n=1)
        + "BEGIN:VCARD\r\nVERSION:3.0\r\nEND:VCARD\r\n"  # no name at all
        + f"BEGIN:VCARD\r\nVERSION:3.0\r\nN:Big;Photo;;;\r\n{photo}\r\nEND:VCARD\r\n"
        + "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Long;"
        + "x" * 150
        + ";;;\r\nEND:VCARD\r\n"
        + GOOD.format(n=2)
        + "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Cut;Off;;;\r\n"
    )

    response = await post_file(client, headers, body.encode())

    assert response.status_code == 200, response.text
    report = response.json()
    assert report["created"] == 2
    assert report["refused_count"] == 4
    reasons = {entry["position"]: entry["reason"] for entry in report["refused"]}
    assert reasons[2] == "the record has no name, organisation, email or phone"
    assert reasons[3].startswith("a line of") or reasons[3].startswith("the card is larger than the limit")
    assert reasons[4] == "first_name is 150 characters long; at most 100 fit"
    assert reasons[6] == "the card has no END:VCARD (the file ends inside it)"


async def test_thousands_of_empty_cards_are_each_refused_and_listed_up_to_a_bound(client, db, headers, existing):
    body = b"BEGIN:VCARD\r\nEND:VCARD\r\n" * 20_000

    response = await post_file(client, headers, body)

    assert response.status_code == 200
    assert response.json()["refused_count"] == 20_000
    assert len(response.json()["refused"]) == 1000
    assert await untouched(db, existing)
