"""Imports: a file's records (vCards or CSV rows) read one at a time and written through the contacts service,
each matched first (by UID, else by the same name and a shared email or phone), so that importing a file again
changes nothing and a changed record updates its contact alone. `mode` says what a match does: merge (the file's
values added to the contact's), replace (the file's record becomes the contact), skip. A record that cannot be
stored is refused with its position and reason; the others go on."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import import_service as contacts
from app.contacts.models import Contact
from app.interchange import csv_in, matching, reading
from app.interchange.errors import ImportLayoutUnknown, ImportMappingInvalid, ImportNotRecognised, ImportTooLarge
from app.interchange.records import FIELDS, LIST_FIELDS, Record, Refused, normalise
from app.interchange.schemas import ImportMode, ImportReport
from app.interchange.vcard_in import read_card

logger = logging.getLogger(__name__)


def parse_mapping(raw: str | None) -> dict[str, str]:
    """A column mapping (`{"CSV column": "contact field"}`, JSON) checked against the fields a column may name."""
    if not raw:
        return {}
    try:
        mapping = json.loads(raw)
    except ValueError as exc:
        raise ImportMappingInvalid from exc
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise ImportMappingInvalid
    unknown = sorted({value for value in mapping.values() if value not in csv_in.MAPPABLE})
    if unknown:
        raise ImportMappingInvalid(f"Unknown contact fields in the mapping: {', '.join(unknown)[:500]}.")
    return mapping


def _current(contact: Contact) -> dict[str, Any]:
    fields = {name: getattr(contact, name) for name in FIELDS}
    fields["phones"] = [{k: v for k, v in entry.items() if k != "e164"} for entry in contact.phones or []]
    return fields


def _merged(contact: Contact, fields: dict[str, Any]) -> dict[str, Any]:
    """The contact with the record's values: its non-empty fields win, list entries it lacks are added (the
    contact's primary entry stays primary), labels are joined, favourite if either says so."""
    merged = _current(contact)
    for name, value in fields.items():
        if name in LIST_FIELDS:
            have = {repr(_identity(name, entry)) for entry in merged[name]}
            added = [dict(entry) for entry in value if repr(_identity(name, entry)) not in have]
            if merged[name]:
                for entry in added:
                    entry["primary"] = False if name != "urls" else entry.get("primary")
                    if name == "urls":
                        entry.pop("primary", None)
            merged[name] = [*merged[name], *added][:20]
        elif name == "labels":
            merged[name] = list(dict.fromkeys([*merged[name], *value]))[:50]
        elif name == "favorite":
            merged[name] = merged[name] or value
        elif value not in (None, ""):
            merged[name] = value
    return merged


def _identity(name: str, entry: Mapping[str, Any]) -> Any:
    if name == "addresses":
        return [str(entry.get(p) or "").lower() for p in ("street", "locality", "region", "postal_code", "country")]
    return str(entry["value"]).lower() if name == "emails" else entry["value"]


def _merged_extra(old: Any, new: Any) -> Any:
    if not isinstance(old, dict) or not old.get("lines"):
        return new
    if not isinstance(new, dict):
        return old
    return {**new, "lines": list(dict.fromkeys([*old["lines"], *new.get("lines", [])]))}


async def _store(
    db: AsyncSession, user_id: int, record: Record, mode: ImportMode, region: str | None, known: matching.Known
) -> str:
    """Write one record that matches a contact; answers updated, unchanged or skipped ("created" when it matches
    none: the caller creates it). A write runs in a savepoint of its own: a record the database refuses leaves the
    others standing."""
    match = known.match(record, region)
    if match is None:
        return "created"
    if mode == "skip":
        return "skipped"
    if mode == "merge":
        fields, extra = _merged(match, record.fields), _merged_extra(match.vcard_extra, record.extra)
    else:
        fields, extra = record.fields, record.extra
    if not contacts.stage_imported(db, match, fields, extra=extra, region=region):
        return "unchanged"
    try:
        async with db.begin_nested():
            await contacts.save_imported(db, match)
    except DBAPIError as exc:
        logger.warning("import: a record the database refused: %s", exc.__class__.__name__)
        raise Refused("the database could not store this record") from exc
    return "updated"


BATCH = 100
Read = Callable[[], Record]


async def _take_batch(
    db: AsyncSession,
    user_id: int,
    batch: list[tuple[int, Read | str]],
    mode: ImportMode,
    region: str | None,
    report: ImportReport,
    resume: Resume,
    keys: matching.BookKeys,
) -> None:
    """Read, match and write a batch of records (each `Read` parses its record; a string is its refusal)."""
    ready: list[tuple[int, Record]] = []
    for position, item in batch:
        try:
            if isinstance(item, str):
                raise Refused(item)
            ready.append((position, normalise(item())))
        except Refused as refusal:
            report.refuse(position, str(refusal))
    known = matching.Known(keys)
    await known.load(db, user_id, [record for _, record in ready])
    creations = matching.Creations()
    for position, record in ready:
        if creations.would_match(record):
            await creations.create(db, user_id, region, known, report)
        try:
            outcome = await _store(db, user_id, record, mode, region, known)
        except Refused as refusal:
            report.refuse(position, str(refusal))
            continue
        if outcome == "created":
            creations.add(position, record)
        else:
            setattr(report, outcome, getattr(report, outcome) + 1)
    await creations.create(db, user_id, region, known, report)
    db.expunge_all()  # written: the session need not remember them (a long file stays in bounded memory)
    for position, _ in batch:
        await resume.passed(position, report)


CHECKPOINT_EVERY = 200


class Resume:
    """Where a background import stands: the last record whose work is committed (`position`) and the report
    then; `checkpoint(position, report)` commits the work up to a record (and takes the user's lock again)."""

    def __init__(
        self,
        position: int = 0,
        report: ImportReport | None = None,
        checkpoint: Callable[[int, ImportReport], Awaitable[None]] | None = None,
    ) -> None:
        self.position = position
        self.report = report
        self.checkpoint = checkpoint
        self.since = 0

    async def passed(self, position: int, report: ImportReport) -> None:
        self.since += 1
        if self.checkpoint is not None and self.since >= CHECKPOINT_EVERY:
            self.since = 0
            await self.checkpoint(position, report)


async def _chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def import_bytes(
    db: AsyncSession,
    user_id: int,
    data: bytes,
    *,
    mode: ImportMode = "merge",
    mapping: Mapping[str, str] | None = None,
    content_type: str | None = None,
    filename: str | None = None,
    max_record: int,
    fallback_region: str | None = None,
) -> ImportReport:
    """Import a file (vCard or CSV, told by its content) held in memory; see `import_stream`."""
    return await import_stream(
        db,
        user_id,
        _chunks_of(data),
        mode=mode,
        mapping=mapping,
        content_type=content_type,
        filename=filename,
        max_record=max_record,
        fallback_region=fallback_region,
    )


async def import_stream(
    db: AsyncSession,
    user_id: int,
    chunks: AsyncIterator[bytes],
    *,
    mode: ImportMode = "merge",
    mapping: Mapping[str, str] | None = None,
    content_type: str | None = None,
    filename: str | None = None,
    max_record: int,
    fallback_region: str | None = None,
    resume: Resume | None = None,
) -> ImportReport:
    """Import a file read chunk by chunk: each record is read, matched and written (or refused) in turn, so
    memory holds one record. ImportNotRecognised (nothing written) when the file is neither vCard nor CSV.
    With `resume` (a background job): records up to its position are passed over, the report goes on from its
    report, and every CHECKPOINT_EVERY records its checkpoint commits the work done so far."""
    decoded = reading.utf8_chunks(chunks)
    first = await anext(decoded, None)
    if first is None:
        raise ImportNotRecognised("The file is empty.")
    encoding, head = first
    kind = reading.detect(head, content_type, filename)
    if kind is None:
        raise ImportNotRecognised

    async def rest() -> AsyncIterator[bytes]:
        yield head
        async for _, chunk in decoded:
            yield chunk

    lines = reading.lines(rest(), max_record)
    region = None
    resume = resume or Resume()
    report = resume.report or ImportReport(format=kind)
    if kind == "vcard":
        region = await contacts.lock_address_book(db, user_id) or fallback_region
        keys = await matching.BookKeys.read(db, user_id)
        batch: list[tuple[int, Read | str]] = []
        async for card in reading.cards(lines, max_record):
            if card.position <= resume.position:
                continue
            batch.append((card.position, card.refused or partial(read_card, card.text)))
            if len(batch) >= BATCH:
                await _take_batch(db, user_id, batch, mode, region, report, resume, keys)
                batch = []
        await _take_batch(db, user_id, batch, mode, region, report, resume, keys)
        return report
    records = csv_in.csv_records(lines, encoding, max_record)
    _, columns = await anext(records, (0, "the file is empty"))
    if isinstance(columns, str):
        raise ImportNotRecognised(f"The CSV header cannot be read: {columns}.")
    if len(columns) > csv_in.MAX_COLUMNS:
        raise ImportTooLarge(f"The CSV has {len(columns)} columns; at most {csv_in.MAX_COLUMNS} are read.")
    columns = [column.strip().lstrip("\ufeff") for column in columns]
    layout = "mapping" if mapping else csv_in.detect_layout(columns)
    if layout is None:
        raise ImportLayoutUnknown
    report.layout = layout
    region = await contacts.lock_address_book(db, user_id) or fallback_region
    keys = await matching.BookKeys.read(db, user_id)
    rows: list[tuple[int, Read | str]] = []
    async for number, cells in records:
        if number <= resume.position:
            continue
        if isinstance(cells, str):
            rows.append((number, cells))
        elif len(cells) > len(columns):
            rows.append((number, f"the row has {len(cells)} cells and the header {len(columns)}"))
        else:
            rows.append((number, partial(csv_in.read_row, layout, columns, cells, mapping or {})))
        if len(rows) >= BATCH:
            await _take_batch(db, user_id, rows, mode, region, report, resume, keys)
            rows = []
    await _take_batch(db, user_id, rows, mode, region, report, resume, keys)
    return report


def too_large(size: int, limit: int) -> ImportTooLarge:
    return ImportTooLarge(f"The file is {size} bytes; an import takes at most {limit} bytes.")
