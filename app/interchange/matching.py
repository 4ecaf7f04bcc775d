"""How an import finds the contact a record is: by UID, else by the same name (ignoring case) and an email or
phone in common (or, when neither has any, the name alone). The book's uids and names are read once per import;
the contacts a batch may match are then read by primary key, a batch at a time; the records that match nothing are
created together at the end of their batch."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import import_service as contacts
from app.contacts.entries import e164
from app.contacts.models import Contact
from app.interchange.records import Record, Refused
from app.interchange.schemas import ImportReport

logger = logging.getLogger(__name__)


def phone_keys(entries: list[dict[str, Any]], region: str | None) -> set[str]:
    return {e164(str(entry["value"]), region) or str(entry["value"]) for entry in entries}


def same_person(contact: Contact, fields: Mapping[str, Any], region: str | None) -> bool:
    """Same name (the caller asked for it) and a shared email or phone; with neither on both sides, the name."""
    emails = {str(entry["value"]).lower() for entry in fields["emails"]}
    phones = phone_keys(fields["phones"], region)
    theirs_emails = {str(entry["value"]).lower() for entry in contact.emails or []}
    theirs_phones = {entry.get("e164") or str(entry["value"]) for entry in contact.phones or []}
    if not (emails or phones) and not (theirs_emails or theirs_phones):
        return True
    return bool(emails & theirs_emails or phones & theirs_phones)


class Known:
    """What a batch of records may match: the book's uids and names, read once per import (`keys`), and the
    contacts a batch's records name, read by primary key in one query; the contacts the import creates join
    them, so that a record matches one created earlier in the same file."""

    def __init__(self, keys: BookKeys) -> None:
        self.keys = keys
        self.by_uid: dict[str, Contact] = {}
        self.by_name: dict[tuple[str, str], list[Contact]] = {}

    def add(self, contact: Contact) -> None:
        self.keys.add(contact.id, contact.uid, contact.first_name, contact.last_name, contact.deleted_at is None)
        self.by_uid[contact.uid] = contact
        if contact.deleted_at is None:
            self.by_name.setdefault(name_key(contact.first_name, contact.last_name), []).append(contact)

    async def load(self, db: AsyncSession, user_id: int, records: list[Record]) -> None:
        ids = {self.keys.uids[record.uid] for record in records if record.uid and record.uid in self.keys.uids}
        for record in records:
            ids.update(self.keys.names.get(name_key(record.fields["first_name"], record.fields["last_name"]), ()))
        for contact in await contacts.contacts_by_ids(db, user_id, sorted(ids)):
            self.by_uid[contact.uid] = contact
            if contact.deleted_at is None:
                self.by_name.setdefault(name_key(contact.first_name, contact.last_name), []).append(contact)

    def match(self, record: Record, region: str | None) -> Contact | None:
        if record.uid:
            found = self.by_uid.get(record.uid)
            if found is not None:
                if found.deleted_at is not None:
                    raise Refused("the contact with this UID is in the trash: restore or purge it first")
                return found
        named = self.by_name.get(name_key(record.fields["first_name"], record.fields["last_name"]), [])
        return next((contact for contact in named if same_person(contact, record.fields, region)), None)


class BookKeys:
    """The user's uids (to ids) and live names (to ids), read once per import and kept up to date by it."""

    def __init__(self) -> None:
        self.uids: dict[str, int] = {}
        self.names: dict[tuple[str, str], list[int]] = {}

    def add(self, contact_id: int, uid: str, first: str, last: str | None, live: bool) -> None:
        self.uids[uid] = contact_id
        if live:
            self.names.setdefault(name_key(first, last), []).append(contact_id)

    @classmethod
    async def read(cls, db: AsyncSession, user_id: int) -> BookKeys:
        keys = cls()
        for row in await contacts.book_keys(db, user_id):
            keys.add(*row)
        return keys


def name_key(first_name: str, last_name: str | None) -> tuple[str, str]:
    return first_name.lower(), (last_name or "").lower()


class Creations:
    """Records that match no contact, created together at the end of their batch (a few statements for the whole
    batch); one that a later record of the batch would match is created first."""

    def __init__(self) -> None:
        self.waiting: list[tuple[int, Record]] = []
        self.uids: set[str] = set()
        self.names: set[tuple[str, str]] = set()

    def would_match(self, record: Record) -> bool:
        return (record.uid is not None and record.uid in self.uids) or name_key(
            record.fields["first_name"], record.fields["last_name"]
        ) in self.names

    def add(self, position: int, record: Record) -> None:
        self.waiting.append((position, record))
        if record.uid:
            self.uids.add(record.uid)
        self.names.add(name_key(record.fields["first_name"], record.fields["last_name"]))

    async def create(
        self, db: AsyncSession, user_id: int, region: str | None, known: Known, report: ImportReport
    ) -> None:
        """Create the waiting records in one savepoint; if the database refuses it, one by one (each refused
        alone)."""
        waiting, self.waiting, self.uids, self.names = self.waiting, [], set(), set()
        if not waiting:
            return
        try:
            async with db.begin_nested():
                created = await contacts.create_imported_many(
                    db, user_id, [(r.fields, r.uid, r.extra) for _, r in waiting], region=region
                )
        except DBAPIError:
            for position, record in waiting:
                try:
                    async with db.begin_nested():
                        one = await contacts.create_imported(
                            db, user_id, record.fields, uid=record.uid, extra=record.extra, region=region
                        )
                except DBAPIError as exc:
                    logger.warning("import: a record the database refused: %s", exc.__class__.__name__)
                    report.refuse(position, "the database could not store this record")
                    continue
                known.add(one)
                report.created += 1
            return
        for contact in created:
            known.add(contact)
        report.created += len(created)
