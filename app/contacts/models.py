"""The contacts table and the counts table that keeps each address book's size."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Index, SmallInteger, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigIntId, UTCDateTime, utcnow


def search_text(first_name: str | None, last_name: str | None, email: str | None) -> str:
    return " ".join(part for part in (first_name, last_name, email) if part).lower()


def birthday_key(birthday: date | None) -> int | None:
    """Month and day as one sortable number (Feb 29 is 229), indexed for the birthdays query."""
    return birthday.month * 100 + birthday.day if birthday else None


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100), default=None)
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    phone: Mapped[str | None] = mapped_column(String(50), default=None)
    birthday: Mapped[date | None] = mapped_column(Date, default=None)
    birthday_key: Mapped[int | None] = mapped_column(SmallInteger, default=None)
    notes: Mapped[str | None] = mapped_column(String(2000), default=None)
    # Lower-cased "first last email", kept by the repository; `q` searches it (trigram-indexed on
    # PostgreSQL). Unbounded: lower-casing can lengthen text ("İ" becomes two characters).
    search_text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    __table_args__ = (
        Index("ix_contacts_user_id_id", "user_id", "id"),
        Index("ix_contacts_user_id_birthday_key", "user_id", "birthday_key"),
        Index("uq_contacts_user_id_email", "user_id", func.lower(email), unique=True),
        {"sqlite_autoincrement": True},
    )


class ContactCount(Base):
    """How many contacts each user has, kept by the repository in the transaction that adds or removes one, so
    that the unfiltered list's `total` is one primary-key read instead of a count over the whole address book."""

    __tablename__ = "contact_counts"

    user_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    contacts: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    __table_args__ = (CheckConstraint("contacts >= 0", name="not_negative"),)
