"""Reading an uploaded file in bounded memory: its encoding (UTF-8 with or without BOM, UTF-16, Latin-1), its lines
(CRLF or LF, each at most a limit), what it is (vCard, CSV, or neither), and a vCard stream cut into cards at
BEGIN:VCARD/END:VCARD with a size limit per card. Parsing each card's properties is vobject's work (vcard_in.py)."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Literal

Kind = Literal["vcard", "csv"]
SNIFF_BYTES = 64 * 1024


class TooLong:
    """A line that went over the limit: its bytes were dropped as they came, never held."""

    def __init__(self, length: int) -> None:
        self.length = length


def sniff_encoding(head: bytes) -> str:
    """The codec of a file from its first bytes: a BOM says it, else NUL bytes in every other place say UTF-16,
    else UTF-8 if the head decodes as UTF-8 (a sequence cut at the end is allowed), else Latin-1 (cp1252)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sample = head[:4096]
    if len(sample) >= 4:
        odd_nuls, even_nuls = sample[1::2].count(0), sample[0::2].count(0)
        half = len(sample) // 2
        if odd_nuls > half * 0.6 and even_nuls < half * 0.1:
            return "utf-16-le"
        if even_nuls > half * 0.6 and odd_nuls < half * 0.1:
            return "utf-16-be"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "cp1252"
    return "utf-8"


def decode_text(raw: bytes, charset: str | None = None) -> str:
    """One card or row as text: in its declared charset when Python knows it, else UTF-8, else cp1252 (whose
    undefined bytes read as Latin-1)."""
    for name in (charset, "utf-8"):
        if not name:
            continue
        try:
            return raw.decode(name)
        except (LookupError, UnicodeDecodeError):
            continue
    return raw.decode("cp1252", errors="replace")


async def utf8_chunks(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, bytes]]:
    """The file as it came when it is UTF-8, cp1252 or Latin-1 (line ends are the same bytes there); UTF-16
    transcoded to UTF-8 as it streams. Yields (encoding, chunk); the first chunk carries at least SNIFF_BYTES (or
    the whole file) so that the encoding is judged on enough of it."""
    head = b""
    stream = aiter(chunks)
    async for chunk in stream:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    encoding = sniff_encoding(head)
    if encoding.startswith("utf-16"):
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        yield "utf-8", decoder.decode(head).encode("utf-8")
        async for chunk in stream:
            yield "utf-8", decoder.decode(chunk).encode("utf-8")
        yield "utf-8", decoder.decode(b"", final=True).encode("utf-8")
        return
    if encoding == "utf-8-sig":
        head, encoding = head[len(codecs.BOM_UTF8) :], "utf-8"
    yield encoding, head
    async for chunk in stream:
        yield encoding, chunk


async def lines(chunks: AsyncIterator[bytes], max_line: int) -> AsyncIterator[bytes | TooLong]:
    """Physical lines without their CR/LF; a line over `max_line` bytes becomes TooLong (its bytes are dropped as
    they come: a gigabyte on one line costs `max_line` of memory)."""
    pending = bytearray()
    dropped = 0
    async for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if dropped:
                dropped += len(piece)
            elif len(pending) + len(piece) > max_line:
                dropped = len(pending) + len(piece)
                pending.clear()
            else:
                pending += piece
            if end < 0:
                break
            if dropped:
                yield TooLong(dropped)
                dropped = 0
            else:
                yield bytes(pending.rstrip(b"\r"))
                pending.clear()
            start = end + 1
    if dropped:
        yield TooLong(dropped)
    elif pending:
        yield bytes(pending.rstrip(b"\r"))


@dataclass
class RawCard:
    """A card as it came (its lines joined with CRLF), or why it could not be taken (`refused`)."""

    position: int
    text: bytes = b""
    refused: str | None = None


def _is(line: bytes, word: bytes) -> bool:
    return line.strip().upper().replace(b" ", b"") == word


async def cards(source: AsyncIterator[bytes | TooLong], max_card: int) -> AsyncIterator[RawCard]:
    """Cut a vCard stream into cards. Lines outside a card are ignored; a card over `max_card` bytes (a 40 MB
    PHOTO) is refused and skipped to its END:VCARD without being held; nesting (an AGENT card inside) counts."""
    position = 0
    depth = 0
    held: list[bytes] = []
    size = 0
    refused: str | None = None
    async for line in source:
        if isinstance(line, TooLong):
            if depth:
                refused, held = refused or f"a line of {line.length} bytes is over the limit of the card", []
            continue
        if _is(line, b"BEGIN:VCARD"):
            if depth == 0:
                position += 1
                held, size, refused = [], 0, None
            depth += 1
        if depth == 0:
            continue
        if refused is None:
            size += len(line) + 2
            if size > max_card:
                refused, held = f"the card is larger than the limit of {max_card} bytes", []
            else:
                held.append(line)
        if _is(line, b"END:VCARD"):
            depth -= 1
            if depth == 0:
                yield RawCard(position, b"\r\n".join(held) + b"\r\n" if refused is None else b"", refused)
                held = []
    if depth:
        yield RawCard(position, refused="the card has no END:VCARD (the file ends inside it)")


def unfold(text: str) -> Iterator[str]:
    """Logical lines of a card: a physical line starting with a space or tab continues the one before."""
    current: str | None = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and current is not None:
            current += line[1:]
            continue
        if current is not None:
            yield current
        current = line
    if current is not None:
        yield current


def detect(head: bytes, content_type: str | None, filename: str | None) -> Kind | None:
    """What a file is, from its first bytes (decoded, BOM and leading blank lines skipped): a vCard starts with
    BEGIN:VCARD; a CSV has a header line with a comma, semicolon or tab and no NUL or other control bytes. The
    declared type and name only break a tie; a zip, an image or other binary data is neither."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text[:11].upper() == b"BEGIN:VCARD":
        return "vcard"
    if any(byte < 9 or 13 < byte < 32 for byte in text[:4096]):
        return None
    first = text.split(b"\n", 1)[0]
    if any(separator in first for separator in (b",", b";", b"\t")):
        return "csv"
    declared = (content_type or "").lower()
    if "csv" in declared or (filename or "").lower().endswith(".csv"):
        return "csv" if first else None
    return None
