"""SQL of the contact writes and single reads: change sequence numbers, the live (untrashed) contact, inserts and
updates with their mirrored emails and labels, the email rule, the trash, labels renamed or removed everywhere.
Every query is scoped by the owner's id. The list queries are in `queries.py`."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    case,
    column,
    delete,
    func,
    insert,
    inspect,
    select,
    table,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts.entries import primary_value
from app.contacts.models import Contact, ContactCount, ContactEmail, ContactLabel, birthday_key, search_text
from app.core.db import utcnow

_COLUMNS = Contact.__table__.c
# The one column of the users table that contacts read (the phone region), named here rather than imported: the
# contacts feature does not import the users feature.
_USERS = table("users", column("id"), column("default_region", String))


class ContactEmailTaken(Exception):
    """An email of the contact belongs to another live contact of the user."""


class ContactUidTaken(Exception):
    """The uid belongs to another contact of the user (trashed ones included)."""


def _owned(user_id: int) -> ColumnElement[bool]:
    return _COLUMNS.user_id == user_id


def live(user_id: int) -> list[ColumnElement[bool]]:
    """The user's contacts outside the trash: every read but the trash's filters by this."""
    return [_COLUMNS.user_id == user_id, _COLUMNS.deleted_at.is_(None)]


# -- change sequence numbers ------------------------------------------------------------------------------------


async def take_change_seq(session: AsyncSession, user_id: int, *, count: int = 1, contacts_delta: int = 0) -> int:
    """Give out the user's next `count` change sequence numbers (last-count+1..last) and return the last; add
    `contacts_delta` to the number of live contacts. Every contact write does this FIRST: the user's
    `contact_counts` row stays locked until the transaction ends, so one user's writes run one after another
    (their numbers commit in order, and a check such as the email rule cannot race another write of the user); on
    SQLite, this first write takes the database's write lock. `count=0` only takes the lock."""
    dialect = session.get_bind().dialect.name
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = insert_(ContactCount).values(user_id=user_id, contacts=max(contacts_delta, 0), change_seq=count)
    counted = ContactCount.contacts + contacts_delta
    statement = values.on_conflict_do_update(
        index_elements=[ContactCount.user_id],
        set_={
            "change_seq": ContactCount.change_seq + count,
            # Never below zero (the CHECK): a count that drifted must not fail a delete.
            "contacts": case((counted < 0, 0), else_=counted),
        },
    ).returning(ContactCount.change_seq)
    return int((await session.execute(statement)).scalar_one())


async def phone_region(session: AsyncSession, user_id: int) -> str | None:
    """The user's `default_region` (national phone numbers are read in it)."""
    region = await session.scalar(select(_USERS.c.default_region).where(_USERS.c.id == user_id))
    return str(region) if region else None


# -- reads ------------------------------------------------------------------------------------------------------


async def get_row(session: AsyncSession, contact_id: int, user_id: int) -> dict[str, Any] | None:
    """One live contact as a plain row (a Core select: no ORM identity map on the read path)."""
    result = await session.execute(select(Contact.__table__).where(_COLUMNS.id == contact_id, *live(user_id)))
    row = result.mappings().first()
    return dict(row) if row else None


async def get(session: AsyncSession, contact_id: int, user_id: int) -> Contact | None:
    """One live contact, to change it."""
    result = await session.execute(
        select(Contact).where(Contact.id == contact_id, Contact.user_id == user_id, Contact.deleted_at.is_(None))
    )
    return result.scalar_one_or_none()


async def count_of_user(session: AsyncSession, user_id: int) -> int:
    """The size of the user's address book (trash excluded), from `contact_counts` (one primary-key read)."""
    stored = await session.scalar(select(ContactCount.contacts).where(ContactCount.user_id == user_id))
    return int(stored or 0)


async def ids_of_user(session: AsyncSession, user_id: int) -> list[int]:
    result = await session.execute(select(_COLUMNS.id).where(_owned(user_id)))
    return list(result.scalars())


# -- writes -----------------------------------------------------------------------------------------------------


def derive(contact: Contact) -> None:
    """The columns kept from the others: v1's email and phone (the primary entries), search text, birthday key."""
    contact.email = primary_value(contact.emails or [])
    contact.phone = primary_value(contact.phones or [])
    contact.search_text = search_text(
        contact.first_name,
        contact.middle_name,
        contact.last_name,
        contact.nickname,
        contact.organization,
        emails=[entry["value"] for entry in contact.emails or []],
        phones=[part for entry in contact.phones or [] for part in (entry["value"], entry.get("e164"))],
    )
    contact.birthday_key = birthday_key(contact.birthday)


def _emails_of(contact: Contact) -> set[str]:
    return {str(entry["value"]).lower() for entry in contact.emails or []}


async def check_emails_free(session: AsyncSession, contact: Contact) -> None:
    """Raise ContactEmailTaken when an email of `contact` belongs to another live contact of its user. Race-free
    under `take_change_seq`'s lock, which every write of the user holds."""
    emails = _emails_of(contact)
    if not emails:
        return
    query = (
        select(ContactEmail.contact_id)
        .join(Contact, Contact.id == ContactEmail.contact_id)
        .where(
            ContactEmail.user_id == contact.user_id,
            ContactEmail.value_lower.in_(sorted(emails)),
            Contact.deleted_at.is_(None),
        )
    )
    if contact.id is not None:
        query = query.where(ContactEmail.contact_id != contact.id)
    if await session.scalar(query.limit(1)) is not None:
        raise ContactEmailTaken


async def _uid_taken(session: AsyncSession, user_id: int, uid: str) -> bool:
    found = await session.scalar(select(_COLUMNS.id).where(_owned(user_id), _COLUMNS.uid == uid).limit(1))
    return found is not None


async def _mirror(
    session: AsyncSession, contact: Contact, emails: Iterable[str] | None, labels: Iterable[str] | None
) -> None:
    """Replace the contact's rows in contact_emails and contact_labels (None: unchanged)."""
    if emails is not None:
        await session.execute(delete(ContactEmail).where(ContactEmail.contact_id == contact.id))
        rows = [{"contact_id": contact.id, "user_id": contact.user_id, "value_lower": value} for value in emails]
        if rows:
            await session.execute(insert(ContactEmail), rows)
    if labels is not None:
        await session.execute(delete(ContactLabel).where(ContactLabel.contact_id == contact.id))
        rows = [{"contact_id": contact.id, "user_id": contact.user_id, "name": name} for name in labels]
        if rows:
            await session.execute(insert(ContactLabel), rows)


async def add(
    session: AsyncSession, contact: Contact, *, change_seq: int | None = None, unique_emails: bool = False
) -> Contact:
    """Insert a contact with its mirrored rows, counted and numbered. Pass the `change_seq` the caller took with
    `take_change_seq(..., contacts_delta=1)` (it then holds the lock); without it one is taken here.
    `unique_emails`: refuse an email of another live contact (REST writes); imports and other doors may keep
    duplicates."""
    if change_seq is None:
        change_seq = await take_change_seq(session, contact.user_id, contacts_delta=1)
    contact.uid = contact.uid or str(uuid.uuid4())
    contact.emails = contact.emails or (
        [{"value": contact.email, "label": None, "primary": True}] if contact.email else []
    )
    contact.phones = contact.phones or (
        [{"value": contact.phone, "e164": None, "label": None, "primary": True}] if contact.phone else []
    )
    derive(contact)
    contact.version, contact.change_seq = 1, change_seq
    if unique_emails:
        await check_emails_free(session, contact)
    if await _uid_taken(session, contact.user_id, contact.uid):
        raise ContactUidTaken
    session.add(contact)
    try:
        await session.flush()
    except IntegrityError as exc:  # a uid inserted by a door that does not take the lock
        raise ContactUidTaken from exc
    await _mirror(session, contact, _emails_of(contact), contact.labels or [])
    return contact


def changes_anything(session: AsyncSession, contact: Contact) -> bool:
    """Whether the changes made to `contact` change any column (derived ones brought in step first)."""
    derive(contact)
    return session.is_modified(contact)


async def save(session: AsyncSession, contact: Contact, change_seq: int, *, unique_emails: bool = False) -> None:
    """Write the changes made to `contact` as a new version at `change_seq`. The caller holds the lock
    (`take_change_seq`) since before it read the contact."""
    derive(contact)
    if unique_emails:
        await check_emails_free(session, contact)
    changed = {name for name in ("emails", "labels") if _changed(contact, name)}
    contact.version += 1
    contact.change_seq = change_seq
    await session.flush()
    await _mirror(
        session,
        contact,
        _emails_of(contact) if "emails" in changed else None,
        contact.labels if "labels" in changed else None,
    )


def _changed(contact: Contact, name: str) -> bool:
    history = inspect(contact).attrs[name].history
    return bool(history.added or history.deleted)


async def trash(session: AsyncSession, contact: Contact, change_seq: int) -> None:
    """Move a live contact to the trash: a new version at `change_seq`. Its rows in contact_emails and
    contact_labels stay (readers join on `deleted_at`), so that a restore brings it back whole."""
    contact.deleted_at = utcnow()
    contact.version += 1
    contact.change_seq = change_seq
    await session.flush()


# -- labels -----------------------------------------------------------------------------------------------------


async def label_counts(session: AsyncSession, user_id: int) -> list[tuple[str, int]]:
    """Each label of the user's live contacts with how many carry it, by name."""
    query = (
        select(ContactLabel.name, func.count())
        .join(Contact, Contact.id == ContactLabel.contact_id)
        .where(ContactLabel.user_id == user_id, Contact.deleted_at.is_(None))
        .group_by(ContactLabel.name)
        .order_by(ContactLabel.name)
    )
    return [(str(name), int(count)) for name, count in (await session.execute(query)).all()]


async def with_label(session: AsyncSession, user_id: int, name: str) -> Sequence[Contact]:
    """The user's contacts carrying the label, trashed ones included (a label is renamed or removed everywhere),
    in id order."""
    ids = select(ContactLabel.contact_id).where(ContactLabel.user_id == user_id, ContactLabel.name == name)
    query = select(Contact).where(_owned(user_id), Contact.id.in_(ids)).order_by(Contact.id)
    return (await session.execute(query)).scalars().all()


async def relabel(session: AsyncSession, contacts: Sequence[Contact], old: str, new: str | None, last_seq: int) -> None:
    """Replace (or, with `new` None, remove) label `old` in each of `contacts`: each a new version, numbered
    last_seq-len+1..last_seq in order."""
    first = last_seq - len(contacts) + 1
    for number, contact in enumerate(contacts):
        labels = [new if name == old else name for name in contact.labels if new is not None or name != old]
        contact.labels = list(dict.fromkeys(label for label in labels if label is not None))
        contact.version += 1
        contact.change_seq = first + number
    await session.flush()
    ids = [contact.id for contact in contacts]
    if not ids:
        return
    await session.execute(delete(ContactLabel).where(ContactLabel.contact_id.in_(ids), ContactLabel.name == old))
    if new is not None:
        already = set(
            (
                await session.execute(
                    select(ContactLabel.contact_id).where(ContactLabel.contact_id.in_(ids), ContactLabel.name == new)
                )
            ).scalars()
        )
        rows = [{"contact_id": c.id, "user_id": c.user_id, "name": new} for c in contacts if c.id not in already]
        if rows:
            await session.execute(insert(ContactLabel), rows)


# -- imports and exports (app/interchange) ----------------------------------------------------------------------


async def find_by_uid(session: AsyncSession, user_id: int, uid: str) -> Contact | None:
    """The user's contact with this uid, trashed ones included (a uid is unique in the whole book)."""
    result = await session.execute(select(Contact).where(_owned(user_id), Contact.uid == uid))
    return result.scalar_one_or_none()


async def add_many(session: AsyncSession, contacts: Sequence[Contact], first_seq: int) -> None:
    """Insert new contacts of one user in a few statements (an import's batch), numbered first_seq, first_seq+1,
    ... in order, with their mirrored emails and labels. The caller holds the lock and has taken the numbers
    (`take_change_seq(count=len, contacts_delta=len)`) and made sure their uids are free."""
    for number, contact in enumerate(contacts):
        contact.uid = contact.uid or str(uuid.uuid4())
        derive(contact)
        contact.version, contact.change_seq = 1, first_seq + number
    session.add_all(contacts)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise ContactUidTaken from exc
    emails = [{"contact_id": c.id, "user_id": c.user_id, "value_lower": v} for c in contacts for v in _emails_of(c)]
    labels = [{"contact_id": c.id, "user_id": c.user_id, "name": name} for c in contacts for name in c.labels or []]
    if emails:
        await session.execute(insert(ContactEmail), emails)
    if labels:
        await session.execute(insert(ContactLabel), labels)


async def book_keys(session: AsyncSession, user_id: int) -> list[tuple[int, str, str, str | None, bool]]:
    """Every contact of the user as (id, uid, first name, last name, live): what an import matches its records
    by, read once (a narrow read of the book) rather than looked up batch by batch, whose plans went wrong while
    the import filled the book faster than the statistics followed."""
    query = select(_COLUMNS.id, _COLUMNS.uid, _COLUMNS.first_name, _COLUMNS.last_name, _COLUMNS.deleted_at).where(
        _owned(user_id)
    )
    rows = (await session.execute(query)).all()
    return [(int(id_), str(uid), str(first), last, deleted is None) for id_, uid, first, last, deleted in rows]


async def find_by_ids(session: AsyncSession, user_id: int, ids: Sequence[int]) -> Sequence[Contact]:
    """The user's contacts with these ids (by primary key), trashed ones included."""
    if not ids:
        return []
    query = select(Contact).where(_owned(user_id), Contact.id.in_(sorted(set(ids))))
    return (await session.execute(query)).scalars().all()


async def widest_lists(session: AsyncSession, user_id: int) -> dict[str, int]:
    """The most emails, phones, addresses and urls any live contact of the user has (a CSV header's width)."""
    length = func.jsonb_array_length if session.get_bind().dialect.name == "postgresql" else func.json_array_length
    names = ("emails", "phones", "addresses", "urls")
    query = select(*(func.max(length(_COLUMNS[name])) for name in names)).where(*live(user_id))
    row = (await session.execute(query)).one()
    return {name: int(value or 0) for name, value in zip(names, row, strict=True)}


async def duplicate_keys(
    session: AsyncSession, user_id: int
) -> list[tuple[int, str, str | None, str | None, Any, Any]]:
    """Each live contact's id, names, emails and phones (a narrow read of the whole book, in id order): what the
    duplicates are found by, in one pass with hashing instead of comparing pairs."""
    query = (
        select(
            _COLUMNS.id, _COLUMNS.first_name, _COLUMNS.middle_name, _COLUMNS.last_name, _COLUMNS.emails, _COLUMNS.phones
        )
        .where(*live(user_id))
        .order_by(_COLUMNS.user_id, _COLUMNS.id)
    )
    return [tuple(row) for row in (await session.execute(query)).all()]
