"""Exports as streams: the user's live contacts (all, or those with a label or matching a search) read in id order
one batch at a time, each batch in a short session of its own, and written out as vCards or Google CSV rows as
they are read. The first bytes leave at once and memory holds one batch, however large the book."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.contacts import import_service as contacts
from app.interchange import csv_out
from app.interchange.schemas import ExportFormat, ExportVersion
from app.interchange.vcard_out import write_card

EXPORT_BATCH = 500
MEDIA_TYPES = {"vcard": "text/vcard; charset=utf-8", "csv": "text/csv; charset=utf-8"}


async def contact_batches(
    sessionmaker: async_sessionmaker[AsyncSession], user_id: int, label: str | None, q: str | None
) -> AsyncIterator[list[dict[str, Any]]]:
    after_id = 0
    while True:
        async with sessionmaker() as session:
            batch = await contacts.export_batch(
                session, user_id, after_id=after_id, limit=EXPORT_BATCH, label=label, q=q
            )
        if not batch:
            return
        yield batch
        if len(batch) < EXPORT_BATCH:
            return
        after_id = int(batch[-1]["id"])


async def export_stream(
    sessionmaker: async_sessionmaker[AsyncSession],
    user_id: int,
    export_format: ExportFormat,
    *,
    version: ExportVersion = "4.0",
    label: str | None = None,
    q: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> AsyncIterator[bytes]:
    """The export's bytes, a batch of contacts at a time (UTF-8; CRLF line ends as both formats want);
    `progress` is told how many contacts each batch held."""
    if export_format == "csv":
        async with sessionmaker() as session:
            widest = await contacts.widest_lists(session, user_id)
        columns = csv_out.header(widest)
        # A BOM: spreadsheets then read the file as UTF-8 (Google Contacts reads it either way).
        yield b"\xef\xbb\xbf" + csv_out.csv_text([columns]).encode("utf-8")
        async for batch in contact_batches(sessionmaker, user_id, label, q):
            rows = [csv_out.row(contact, columns) for contact in batch]
            yield csv_out.csv_text(rows).encode("utf-8")
            if progress is not None:
                progress(len(batch))
        return
    async for batch in contact_batches(sessionmaker, user_id, label, q):
        yield "".join(write_card(contact, version) for contact in batch).encode("utf-8")
        if progress is not None:
            progress(len(batch))


def file_name(export_format: ExportFormat) -> str:
    return "contacts.vcf" if export_format == "vcard" else "contacts.csv"
