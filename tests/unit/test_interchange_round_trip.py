"""Round trips with hypothesis-made contacts: written as vCard 4.0, vCard 3.0 or a Google CSV row and read back, a
contact is the same, field for field; and a card's properties the API does not show (X- properties, PHOTO, custom
labels) come out as they came in."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.contacts.entries import spell_label
from app.interchange import csv_in, csv_out, reading
from app.interchange.records import Record, normalise
from app.interchange.vcard_in import read_card
from app.interchange.vcard_out import write_card

ALPHABET = st.characters(categories=["L", "N", "P", "S"], exclude_characters="\x00") | st.just(" ")


def text(max_size: int, *, lines: bool = False) -> st.SearchStrategy[str | None]:
    alphabet = ALPHABET | st.just("\n") if lines else ALPHABET
    return st.none() | st.text(alphabet, min_size=1, max_size=max_size).map(str.strip).filter(bool)


ENTRY_LABELS = st.sampled_from([None, "home", "work", "mobile", "other", "fax", "pager", "main", "Gym Buddy"])
emails = st.lists(
    st.builds(
        lambda user, host, label: {"value": f"{user}@{host}.example", "label": label},
        st.from_regex(r"[a-z0-9._%+-]{1,20}", fullmatch=True),
        st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True),
        ENTRY_LABELS,
    ),
    max_size=4,
    unique_by=lambda entry: entry["value"].lower(),
)
phones = st.lists(
    st.builds(
        lambda value, label: {"value": value, "label": label},
        st.from_regex(r"\+?[0-9][0-9 ]{2,15}[0-9]", fullmatch=True),
        ENTRY_LABELS,
    ),
    max_size=3,
    unique_by=lambda entry: entry["value"],
)
addresses = st.lists(
    st.fixed_dictionaries(
        {
            "label": st.sampled_from([None, "home", "work", "Cottage"]),
            "street": text(60, lines=True),
            "locality": text(30),
            "region": text(30),
            "postal_code": text(10),
            "country": text(30),
        }
    ).filter(lambda a: any(a[p] for p in ("street", "locality", "region", "postal_code", "country"))),
    max_size=2,
)
urls = st.lists(
    st.builds(
        lambda path, label: {"value": f"https://example.com/{path}", "label": label},
        st.from_regex(r"[a-z0-9/]{0,20}", fullmatch=True),
        st.sampled_from([None, "blog", "work"]),
    ),
    max_size=2,
    unique_by=lambda entry: entry["value"],
)


def _primaries(entries: list[dict[str, Any]], with_primary: bool = True) -> list[dict[str, Any]]:
    return [{**entry, "primary": with_primary and n == 0} for n, entry in enumerate(entries)]


contacts = st.fixed_dictionaries(
    {
        "uid": st.uuids().map(str),
        "first_name": st.text(ALPHABET, min_size=1, max_size=40).map(str.strip).filter(bool),
        "middle_name": text(30),
        "last_name": text(40),
        "prefix": text(10),
        "suffix": text(10),
        "nickname": text(30),
        "organization": text(60),
        "job_title": text(60),
        "notes": text(300, lines=True),
        "emails": emails.map(_primaries),
        "phones": phones.map(_primaries),
        "addresses": addresses.map(_primaries),
        "urls": urls,
        # Google's CSV layout reserves labels starting with "* " for its own groups (myContacts, starred, ...).
        "labels": st.lists(
            st.text(ALPHABET, min_size=1, max_size=20)
            .map(spell_label)
            .filter(lambda label: bool(label) and not label.startswith("* ")),
            max_size=4,
            unique=True,
        ),
        "favorite": st.booleans(),
        "birthday": st.none() | st.dates(min_value=date(1800, 1, 1), max_value=date(2025, 12, 31)),
        "anniversary": st.none() | st.dates(min_value=date(1800, 1, 1), max_value=date(2100, 12, 31)),
    }
)


def _expected(contact: dict[str, Any]) -> dict[str, Any]:
    """A contact as normalise keeps it (labels spelled, blank addresses parts None)."""
    return normalise(Record(fields={k: v for k, v in contact.items() if k != "uid"}, uid=contact["uid"])).fields


@pytest.mark.parametrize("version", ["4.0", "3.0"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contact=contacts)
def test_a_contact_written_as_a_vcard_reads_back_the_same(version, contact):
    card = write_card(contact, version)

    record = normalise(read_card(card.encode("utf-8")))

    assert record.uid == contact["uid"]
    assert record.fields == _expected(contact)
    assert record.extra is None


async def _rows(data: bytes) -> list[list[str] | str]:
    async def chunks():
        yield data

    decoded = reading.utf8_chunks(chunks())
    encoding, head = await anext(decoded)

    async def rest():
        yield head
        async for _, chunk in decoded:
            yield chunk

    return [cells async for _, cells in csv_in.csv_records(reading.lines(rest(), 1 << 20), encoding, 1 << 20)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contact=contacts)
def test_a_contact_written_as_a_google_csv_row_reads_back_the_same(contact):
    columns = csv_out.header({name: len(contact[name]) for name in ("emails", "phones", "addresses", "urls")})
    data = b"\xef\xbb\xbf" + csv_out.csv_text([columns, csv_out.row(contact, columns)]).encode("utf-8")

    header, cells = asyncio.run(_rows(data))

    assert csv_in.detect_layout(header) == "google"
    record = normalise(csv_in.read_row("google", header, cells, {}))
    assert record.uid == contact["uid"]
    assert record.fields == _expected(contact)


def test_formula_cells_are_escaped_and_unescaped():
    for value in ("=1+1", "+1 555", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert csv_out.escape_cell(value) == "'" + value
        assert csv_in.unescape_cell(csv_out.escape_cell(value)) == value
    assert csv_out.escape_cell("'quoted") == "'quoted"
    assert csv_in.unescape_cell("'quoted") == "'quoted"
    columns = csv_out.header({})
    contact = {"first_name": "=cmd|' /C calc'!A0", "notes": "@SUM(1)", "uid": "-1"}
    row = next(csv.reader(io.StringIO(csv_out.csv_text([csv_out.row(contact, columns)]))))
    cells = dict(zip(columns, row, strict=True))
    assert cells["First Name"] == "'=cmd|' /C calc'!A0"
    assert cells["Notes"] == "'@SUM(1)"
    assert cells["Custom Field 1 - Value"] == "'-1"


ICLOUD_EXTRAS = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Doe;Jo;;;\r\nFN:Jo Doe\r\nUID:x-1\r\n"
    "item1.EMAIL;type=INTERNET:jo@example.com\r\nitem1.X-ABLabel:Book club\r\n"
    "item2.X-ABRELATEDNAMES;type=pref:Sam\r\nitem2.X-ABLabel:_$!<Spouse>!$_\r\n"
    "X-SOCIALPROFILE;type=twitter;x-user=jodoe:https://twitter.com/jodoe\r\n"
    "PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8U\r\n"
    'X-CUSTOM;X-PARAM="a,b":value\\, with comma\r\nEND:VCARD\r\n'
)


@pytest.mark.parametrize("version", ["4.0", "3.0"])
def test_a_card_read_and_written_keeps_its_other_properties_and_custom_labels(version):
    record = normalise(read_card(ICLOUD_EXTRAS.encode()))
    stored = {**record.fields, "uid": record.uid, "vcard_extra": record.extra}

    again = normalise(read_card(write_card(stored, version).encode()))

    assert again.fields == record.fields
    assert again.extra is not None
    assert record.extra is not None
    # The photo goes out as the version wants it (4.0: a data: URI); the same bytes either way.
    assert [_photo(line) for line in again.extra["lines"] if line.startswith("PHOTO")] == [
        _photo(line) for line in record.extra["lines"] if line.startswith("PHOTO")
    ]
    others = sorted(line for line in again.extra["lines"] if not line.startswith("PHOTO"))
    assert others == sorted(line for line in record.extra["lines"] if not line.startswith("PHOTO"))
    assert record.fields["emails"] == [{"value": "jo@example.com", "label": "Book club", "primary": True}]
    assert sorted(record.extra["lines"]) == sorted(
        [
            "PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8U",
            "item2.X-ABLABEL:_$!<Spouse>!$_",
            "item2.X-ABRELATEDNAMES;TYPE=pref:Sam",
            'X-CUSTOM;X-PARAM="a,b":value\\, with comma',
            "X-SOCIALPROFILE;TYPE=twitter;X-USER=jodoe:https://twitter.com/jodoe",
        ]
    )


def _photo(line: str) -> bytes:
    return base64.b64decode(line.rsplit(",", 1)[-1] if "data:" in line else line.rsplit(":", 1)[-1])


def test_an_inline_photo_is_a_data_uri_in_40_and_base64_in_30_and_survives_both():
    photo = base64.b64encode(b"\xff\xd8\xff\xe0 a small JPEG").decode()
    card = (
        f"BEGIN:VCARD\r\nVERSION:4.0\r\nN:Doe;Jo;;;\r\nUID:p-1\r\nPHOTO:data:image/jpeg;base64,{photo}\r\nEND:VCARD\r\n"
    )
    record = normalise(read_card(card.encode()))
    assert record.extra is not None
    assert record.extra["lines"] == [f"PHOTO:data:image/jpeg;base64,{photo}"]

    as_30 = write_card({**record.fields, "uid": record.uid, "vcard_extra": record.extra}, "3.0")
    assert f"PHOTO;ENCODING=b;TYPE=JPEG:{photo}\r\n" in as_30
    again = normalise(read_card(as_30.encode()))
    as_40 = write_card({**again.fields, "uid": again.uid, "vcard_extra": again.extra}, "4.0")
    assert f"PHOTO:data:image/jpeg;base64,{photo}\r\n" in as_40
