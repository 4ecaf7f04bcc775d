"""Contact model v2: multi-value emails, phones, addresses and urls, labels, favorites, uids, versions, the trash,
change sequence numbers, tombstones and idempotency keys; email uniqueness becomes an application rule.

Every existing contact is carried over: its email and phone become the primary entries (a phone written with a
leading + gets its E.164 form; national numbers cannot be read yet, since no user has a region), it gets a UUID4
uid, version 1 and a change sequence number (per user, in id order); each user's last number goes to
contact_counts. The downgrade restores the 0002 shape: the primary email and phone stay, the rest is dropped,
trashed contacts are deleted (0002 has no trash) and an email held by two live contacts is kept by the older.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import re
import uuid
from collections.abc import Sequence
from typing import Any

import phonenumbers
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
timestamp = sa.DateTime(timezone=True)
json = sa.JSON().with_variant(JSONB(), "postgresql")
EMPTY_LIST = sa.text("'[]'")
BATCH = 1000

contacts = sa.table(
    "contacts",
    sa.column("id", big_id),
    sa.column("user_id", big_id),
    sa.column("first_name", sa.String),
    sa.column("last_name", sa.String),
    sa.column("email", sa.String),
    sa.column("phone", sa.String),
    sa.column("emails", json),
    sa.column("phones", json),
    sa.column("uid", sa.String),
    sa.column("version", sa.Integer),
    sa.column("change_seq", sa.BigInteger),
    sa.column("search_text", sa.Text),
)
contact_emails = sa.table(
    "contact_emails", sa.column("contact_id", big_id), sa.column("value_lower", sa.String), sa.column("user_id", big_id)
)


def _e164(value: str) -> str | None:
    if not value.lstrip().startswith("+"):
        return None
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _search_text(first: str | None, last: str | None, email: str | None, phone: str | None) -> str:
    digits = re.sub(r"[^0-9]", "", phone or "")
    return " ".join(part for part in (first, last, email, digits) if part).lower()


def _carry_contacts_over(bind: sa.engine.Connection) -> None:
    """Fill the new columns of every existing contact, in id order, a batch at a time."""
    last_id, seq_of_user = 0, {}
    while True:
        rows = bind.execute(
            sa.select(
                contacts.c.id,
                contacts.c.user_id,
                contacts.c.first_name,
                contacts.c.last_name,
                contacts.c.email,
                contacts.c.phone,
            )
            .where(contacts.c.id > last_id)
            .order_by(contacts.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        updates: list[dict[str, Any]] = []
        for row in rows:
            seq_of_user[row.user_id] = seq_of_user.get(row.user_id, 0) + 1
            phone_entries = (
                [{"value": row.phone, "e164": _e164(row.phone), "label": None, "primary": True}] if row.phone else []
            )
            updates.append(
                {
                    "row_id": row.id,
                    "emails": [{"value": row.email, "label": None, "primary": True}] if row.email else [],
                    "phones": phone_entries,
                    "uid": str(uuid.uuid4()),
                    "change_seq": seq_of_user[row.user_id],
                    "search_text": _search_text(row.first_name, row.last_name, row.email, row.phone),
                }
            )
        bind.execute(
            contacts.update()
            .where(contacts.c.id == sa.bindparam("row_id"))
            .values(
                emails=sa.bindparam("emails"),
                phones=sa.bindparam("phones"),
                uid=sa.bindparam("uid"),
                change_seq=sa.bindparam("change_seq"),
                search_text=sa.bindparam("search_text"),
            ),
            updates,
        )
        last_id = rows[-1].id
    for user_id, seq in seq_of_user.items():
        bind.execute(
            sa.text("UPDATE contact_counts SET change_seq = :seq WHERE user_id = :user_id"),
            {"seq": seq, "user_id": user_id},
        )


def _mirror_emails(bind: sa.engine.Connection) -> None:
    """contact_emails: each contact's email, lower-cased as the application does it (in Python: SQLite's lower()
    only folds ASCII)."""
    last_id = 0
    while True:
        rows = bind.execute(
            sa.select(contacts.c.id, contacts.c.user_id, contacts.c.email)
            .where(contacts.c.id > last_id, contacts.c.email.is_not(None))
            .order_by(contacts.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        bind.execute(
            contact_emails.insert(),
            [{"contact_id": row.id, "value_lower": row.email.lower(), "user_id": row.user_id} for row in rows],
        )
        last_id = rows[-1].id


def _uid_not_null(bind: sa.engine.Connection) -> None:
    """SQLite rebuilds the table for this; its AUTOINCREMENT counter is carried over, so that no id of a deleted
    contact is ever given again. Run before any table references contacts: SQLite's DROP TABLE deletes the
    referencing rows when foreign keys are on."""
    sequence = None
    if bind.dialect.name == "sqlite":
        sequence = bind.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'contacts'")).scalar()
    with op.batch_alter_table("contacts", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.alter_column("uid", existing_type=sa.String(255), nullable=False)
    if sequence is not None:
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'contacts'"))
        bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('contacts', :seq)"), {"seq": sequence})


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("users", sa.Column("default_region", sa.String(2), nullable=True))

    op.drop_index("uq_contacts_user_id_email", table_name="contacts")
    for name, length in (("middle_name", 100), ("prefix", 50), ("suffix", 50), ("nickname", 100)):
        op.add_column("contacts", sa.Column(name, sa.String(length), nullable=True))
    op.add_column("contacts", sa.Column("organization", sa.String(200), nullable=True))
    op.add_column("contacts", sa.Column("job_title", sa.String(200), nullable=True))
    op.add_column("contacts", sa.Column("anniversary", sa.Date(), nullable=True))
    for name in ("emails", "phones", "addresses", "urls", "labels"):
        op.add_column("contacts", sa.Column(name, json, nullable=False, server_default=EMPTY_LIST))
    op.add_column("contacts", sa.Column("favorite", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("contacts", sa.Column("uid", sa.String(255), nullable=True))
    op.add_column("contacts", sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("contacts", sa.Column("vcard_extra", json, nullable=True))
    op.add_column("contacts", sa.Column("deleted_at", timestamp, nullable=True))
    op.add_column("contacts", sa.Column("change_seq", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("contact_counts", sa.Column("change_seq", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("contact_counts", sa.Column("history_floor", sa.BigInteger(), nullable=False, server_default="0"))

    _carry_contacts_over(bind)
    _uid_not_null(bind)

    op.create_table(
        "contact_emails",
        sa.Column("contact_id", big_id, nullable=False),
        sa.Column("value_lower", sa.String(320), nullable=False),
        sa.Column("user_id", big_id, nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "value_lower", name="pk_contact_emails"),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_contact_emails_contact_id_contacts", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_contact_emails_user_id_value_lower", "contact_emails", ["user_id", "value_lower"])

    _mirror_emails(bind)

    op.create_index("uq_contacts_user_id_uid", "contacts", ["user_id", "uid"], unique=True)
    op.create_index("ix_contacts_user_id_change_seq", "contacts", ["user_id", "change_seq"])
    op.create_index("ix_contacts_user_id_updated_at", "contacts", ["user_id", "updated_at", "id"])
    op.create_index(
        "ix_contacts_user_id_name",
        "contacts",
        ["user_id", sa.text("lower(coalesce(last_name, ''))"), sa.text("lower(first_name)"), "id"],
    )

    op.create_table(
        "contact_labels",
        sa.Column("contact_id", big_id, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("user_id", big_id, nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "name", name="pk_contact_labels"),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_contact_labels_contact_id_contacts", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_contact_labels_user_id_name", "contact_labels", ["user_id", "name"])

    op.create_table(
        "contact_tombstones",
        sa.Column("contact_id", big_id, nullable=False, autoincrement=False),
        sa.Column("user_id", big_id, nullable=False),
        sa.Column("uid", sa.String(255), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.Column("purged_at", timestamp, nullable=False),
        sa.PrimaryKeyConstraint("contact_id", name="pk_contact_tombstones"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_contact_tombstones_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_contact_tombstones_user_id_change_seq", "contact_tombstones", ["user_id", "change_seq"])
    op.create_index("ix_contact_tombstones_purged_at", "contact_tombstones", ["purged_at"])

    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", big_id, nullable=False, autoincrement=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("created_at", timestamp, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "key", name="pk_idempotency_keys"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_idempotency_keys_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    bind = op.get_bind()
    op.drop_table("idempotency_keys")
    op.drop_table("contact_tombstones")
    op.drop_table("contact_labels")
    op.drop_table("contact_emails")
    for name in ("ix_contacts_user_id_name", "ix_contacts_user_id_updated_at", "ix_contacts_user_id_change_seq"):
        op.drop_index(name, table_name="contacts")
    op.drop_index("uq_contacts_user_id_uid", table_name="contacts")

    # 0002 has no trash: what is in it is gone. Of two live contacts with one email, the older keeps it.
    op.execute("DELETE FROM contacts WHERE deleted_at IS NOT NULL")
    op.execute(
        "UPDATE contacts SET email = NULL WHERE email IS NOT NULL AND EXISTS (SELECT 1 FROM contacts AS older "
        "WHERE older.user_id = contacts.user_id AND lower(older.email) = lower(contacts.email) "
        "AND older.id < contacts.id)"
    )
    op.execute(
        "UPDATE contact_counts SET contacts = (SELECT count(*) FROM contacts "
        "WHERE contacts.user_id = contact_counts.user_id)"
    )
    _v1_search_text(bind)

    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): rebuilding users or contacts on SQLite would drop the old
    # table, and with foreign keys on that deletes every row referencing it (contacts, tokens, counts).
    for name in (
        "change_seq", "deleted_at", "vcard_extra", "version", "uid", "favorite", "labels", "urls", "addresses",
        "phones", "emails", "anniversary", "job_title", "organization", "nickname", "suffix", "prefix",
        "middle_name",
    ):  # fmt: skip
        op.drop_column("contacts", name)
    op.create_index("uq_contacts_user_id_email", "contacts", ["user_id", sa.text("lower(email)")], unique=True)
    op.drop_column("contact_counts", "history_floor")
    op.drop_column("contact_counts", "change_seq")
    op.drop_column("users", "default_region")


def _v1_search_text(bind: sa.engine.Connection) -> None:
    """The 0002 search text: first name, last name and email, lower-cased in Python as the application did."""
    last_id = 0
    while True:
        rows = bind.execute(
            sa.select(contacts.c.id, contacts.c.first_name, contacts.c.last_name, contacts.c.email)
            .where(contacts.c.id > last_id)
            .order_by(contacts.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        bind.execute(
            contacts.update().where(contacts.c.id == sa.bindparam("row_id")).values(search_text=sa.bindparam("text")),
            [{"row_id": row.id, "text": _search_text(row.first_name, row.last_name, row.email, None)} for row in rows],
        )
        last_id = rows[-1].id
