"""Reading files in bounded memory: a gigabyte on one line, a card with a 40 MB PHOTO and empty cards by the hundred
thousand pass through the splitter holding no more than a record's limit; encodings are told from the first bytes;
what is neither vCard nor CSV is told apart."""

from __future__ import annotations

import asyncio
import codecs
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from app.interchange import reading

MB = 1024 * 1024
LIMIT = 512 * 1024


async def repeated(chunk: bytes, times: int, *, before: bytes = b"", after: bytes = b"") -> AsyncIterator[bytes]:
    yield before
    for _ in range(times):
        yield chunk
    yield after


def peak_while(run) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = asyncio.run(run())
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_gigabyte_on_one_line_is_one_too_long_line_in_bounded_memory():
    chunk = b"A" * MB

    async def run() -> list[object]:
        return [line async for line in reading.lines(repeated(chunk, 1024, after=b"\r\nnext\r\n"), LIMIT)]

    found, peak = peak_while(run)

    assert [type(line).__name__ for line in found] == ["TooLong", "bytes"]
    assert found[0].length == 1024 * MB + 1  # the CR counted with the line
    assert found[1] == b"next"
    assert peak < 4 * LIMIT


def test_a_card_with_a_40_mb_photo_is_refused_and_the_next_card_read():
    photo_line = b"PHOTO;ENCODING=b;TYPE=JPEG:" + b"QUJD" * (10 * MB)
    before = b"BEGIN:VCARD\r\nVERSION:3.0\r\nN:Big;Photo;;;\r\n"
    after = b"\r\nEND:VCARD\r\nBEGIN:VCARD\r\nVERSION:3.0\r\nN:Small;Card;;;\r\nEND:VCARD\r\n"
    body = before + photo_line + after

    async def run() -> list[reading.RawCard]:
        chunks = repeated(b"", 0, before=body[: len(body) // 2], after=body[len(body) // 2 :])
        return [card async for card in reading.cards(reading.lines(chunks, LIMIT), LIMIT)]

    cards = asyncio.run(run())

    assert [(card.position, card.refused) for card in cards] == [
        (1, f"a line of {len(photo_line) + 1} bytes is over the limit of the card"),  # with its CR
        (2, None),
    ]
    assert b"N:Small;Card;;;" in cards[1].text


def test_empty_cards_by_the_hundred_thousand_stream_through_in_bounded_memory():
    empty = b"BEGIN:VCARD\r\nEND:VCARD\r\n" * 1000

    async def run() -> int:
        count = 0
        async for card in reading.cards(reading.lines(repeated(empty, 200), LIMIT), LIMIT):
            count += 1
            assert card.refused is None
        return count

    count, peak = peak_while(run)

    assert count == 200_000
    assert peak < MB


def test_a_card_over_the_size_limit_in_many_lines_is_refused():
    body = (
        b"BEGIN:VCARD\r\n"
        + b"NOTE:"
        + b"x" * 70
        + b"\r\n" * 1
        + (b" " + b"y" * 70 + b"\r\n") * 10_000
        + b"END:VCARD\r\n"
    )

    async def run() -> list[reading.RawCard]:
        return [card async for card in reading.cards(reading.lines(repeated(body, 1), LIMIT), LIMIT)]

    (card,) = asyncio.run(run())

    assert card.refused == f"the card is larger than the limit of {LIMIT} bytes"
    assert card.text == b""


@pytest.mark.parametrize(
    ("head", "encoding"),
    [
        (codecs.BOM_UTF8 + "BEGIN:VCARD\r\nN:Müller".encode(), "utf-8-sig"),
        ("BEGIN:VCARD\r\nN:Müller".encode("utf-16"), "utf-16"),
        ("BEGIN:VCARD\r\nN:Müller".encode("utf-16-le"), "utf-16-le"),
        ("BEGIN:VCARD\r\nN:Müller".encode("utf-16-be"), "utf-16-be"),
        ("BEGIN:VCARD\r\nN:Müller".encode(), "utf-8"),
        ("BEGIN:VCARD\r\nN:Müller".encode("latin-1"), "cp1252"),
    ],
)
def test_the_encoding_is_told_from_the_first_bytes(head, encoding):
    assert reading.sniff_encoding(head) == encoding


@pytest.mark.parametrize(
    ("head", "content_type", "kind"),
    [
        (b"\r\n\r\nbegin:vcard\r\n", None, "vcard"),
        (b"First Name,Last Name\r\n", None, "csv"),
        (b"Name;Mail\n", "text/plain", "csv"),
        (b"PK\x03\x04\x14\x00\x00\x00", "text/vcard", None),
        (b"\x00\x01\x02garbage", "text/csv", None),
        (b"words and more words\n", None, None),
        (b"single\n", "text/csv", "csv"),
    ],
)
def test_what_a_file_is_is_told_from_its_content(head, content_type, kind):
    assert reading.detect(head, content_type, None) == kind


def test_utf16_is_transcoded_to_utf8_as_it_streams():
    body = "BEGIN:VCARD\r\nN:Østergaard;Søren;;;\r\nEND:VCARD\r\n".encode("utf-16")

    async def run() -> list[tuple[str, bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            for n in range(0, len(body), 7):
                yield body[n : n + 7]

        return [part async for part in reading.utf8_chunks(chunks())]

    parts = asyncio.run(run())

    assert {encoding for encoding, _ in parts} == {"utf-8"}
    assert b"".join(chunk for _, chunk in parts).decode() == "BEGIN:VCARD\r\nN:Østergaard;Søren;;;\r\nEND:VCARD\r\n"
