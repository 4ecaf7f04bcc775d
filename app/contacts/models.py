"""The contacts tables: contacts (multi-value fields as JSON), their labels and emails mirrored for look-ups, each
address book's size and change sequence, tombstones of purged contacts, and idempotency keys of REST writes."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigIntId, UTCDateTime, utcnow

# JSON documents: JSONB on PostgreSQL (compact, comparable), JSON text on SQLite.
Json = JSON().with_variant(JSONB(), "postgresql")

_NOT_DIGIT = re.compile(r"[^0-9]")


def phone_digits(value: str | None) -> str:
    return _NOT_DIGIT.sub("", value or "")


def search_text(*names: str | None, emails: Iterable[str | None] = (), phones: Iterable[str | None] = ()) -> str:
    """What `q` searches, lower-cased: the names (and organisation), every email, and the digits of every phone
    (so that `5550199` finds `+1 555-0199`). Names come first, in the order given, as v1's "first last email"."""
    digits = dict.fromkeys(d for d in (phone_digits(p) for p in phones) if d)
    return " ".join(part for part in (*names, *emails, *digits) if part).lower()


def birthday_key(birthday: date | None) -> int | None:
    """Month and day as one sortable number (Feb 29 is 229), indexed for the birthdays query."""
    return birthday.month * 100 + birthday.day if birthday else None


class Contact(Base):
    """A contact. `email` and `phone` mirror the primary entries of `emails` and `phones` (v1 clients read and
    write them); `version` is bumped by every write (the ETag is `"<id>-<version>"`); `change_seq` is the user's
    sequence number of the contact's last change (the change feed's order); `deleted_at` set = in the trash."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"))
    uid: Mapped[str] = mapped_column(String(255))
    first_name: Mapped[str] = mapped_column(String(100))
    middle_name: Mapped[str | None] = mapped_column(String(100), default=None)
    last_name: Mapped[str | None] = mapped_column(String(100), default=None)
    prefix: Mapped[str | None] = mapped_column(String(50), default=None)
    suffix: Mapped[str | None] = mapped_column(String(50), default=None)
    nickname: Mapped[str | None] = mapped_column(String(100), default=None)
    organization: Mapped[str | None] = mapped_column(String(200), default=None)
    job_title: Mapped[str | None] = mapped_column(String(200), default=None)
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    phone: Mapped[str | None] = mapped_column(String(50), default=None)
    # Lists of entries: emails {value, label, primary}, phones {value, e164, label, primary}, addresses {label,
    # street, locality, region, postal_code, country, primary}, urls {value, label}; labels: group names.
    emails: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list, server_default=text("'[]'"))
    phones: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list, server_default=text("'[]'"))
    addresses: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list, server_default=text("'[]'"))
    urls: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list, server_default=text("'[]'"))
    labels: Mapped[list[str]] = mapped_column(Json, default=list, server_default=text("'[]'"))
    favorite: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    birthday: Mapped[date | None] = mapped_column(Date, default=None)
    birthday_key: Mapped[int | None] = mapped_column(SmallInteger, default=None)
    anniversary: Mapped[date | None] = mapped_column(Date, default=None)
    notes: Mapped[str | None] = mapped_column(String(2000), default=None)
    # vCard properties the API does not expose (kept for vCard and CardDAV): every REST write leaves them as they are.
    vcard_extra: Mapped[dict[str, Any] | list[Any] | None] = mapped_column(Json, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    change_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Lower-cased names, organisation, emails and phone digits, kept by the repository; `q` searches it
    # (trigram-indexed on PostgreSQL). Unbounded: lower-casing can lengthen text ("İ" becomes two characters).
    search_text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    __table_args__ = (
        Index("ix_contacts_user_id_id", "user_id", "id"),
        Index("ix_contacts_user_id_birthday_key", "user_id", "birthday_key"),
        Index("uq_contacts_user_id_uid", "user_id", "uid", unique=True),
        Index("ix_contacts_user_id_change_seq", "user_id", "change_seq"),
        # The trash (and the clean-up's search for expired trash): trashed rows only.
        Index(
            "ix_contacts_trash",
            "user_id",
            "deleted_at",
            "id",
            postgresql_where=text("deleted_at IS NOT NULL"),
            sqlite_where=text("deleted_at IS NOT NULL"),
        ),
        Index("ix_contacts_user_id_updated_at", "user_id", "updated_at", "id"),
        # `sort=name`: last name, first name, id, case-insensitively; keyset pages walk this index.
        Index(
            "ix_contacts_user_id_name",
            "user_id",
            func.lower(func.coalesce(last_name, "")),
            func.lower(first_name),
            "id",
        ),
        {"sqlite_autoincrement": True},
    )


class ContactLabel(Base):
    """The labels (groups) of each contact, mirrored from `contacts.labels` by the repository: `?label=` filters
    and `GET /labels` counts read this instead of every contact's JSON."""

    __tablename__ = "contact_labels"

    contact_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigIntId)

    __table_args__ = (Index("ix_contact_labels_user_id_name", "user_id", "name"),)


class ContactEmail(Base):
    """Every email of each contact, lower-cased, mirrored from `contacts.emails` by the repository: REST writes
    look here for another live contact of the user holding the same email (uniqueness is an application rule,
    since imports, CardDAV and restores may hold duplicates)."""

    __tablename__ = "contact_emails"

    contact_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    value_lower: Mapped[str] = mapped_column(String(320), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigIntId)

    __table_args__ = (Index("ix_contact_emails_user_id_value_lower", "user_id", "value_lower"),)


class ContactCount(Base):
    """Per user: how many live contacts (trash excluded), kept in the transaction that adds or removes one, so
    that the unfiltered list's `total` is one primary-key read; `change_seq`, the last change sequence number
    given out (every contact write takes the next one here, and the row lock serialises one user's writes, so
    their numbers commit in order); `history_floor`, below which change tokens are expired."""

    __tablename__ = "contact_counts"

    user_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    contacts: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    change_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    history_floor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    __table_args__ = (CheckConstraint("contacts >= 0", name="not_negative"),)


class ContactTombstone(Base):
    """A contact purged from the trash, remembered (SYNC_HISTORY_DAYS) so that the change feed can tell clients."""

    __tablename__ = "contact_tombstones"

    contact_id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"))
    uid: Mapped[str] = mapped_column(String(255))
    change_seq: Mapped[int] = mapped_column(BigInteger)
    purged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_contact_tombstones_user_id_change_seq", "user_id", "change_seq"),
        Index("ix_contact_tombstones_purged_at", "purged_at"),
    )


class IdempotencyKey(Base):
    """A REST write made with an `Idempotency-Key`: its request's hash and its response, answered again to a retry
    with the same key and body (for 24 hours)."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    response_body: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)
