"""Keep each address book's size, so that a page of the contact list costs the same at 1,000 or 100,000 contacts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "contact_counts",
        sa.Column("user_id", big_id, nullable=False),
        sa.Column("contacts", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("user_id", name="pk_contact_counts"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_contact_counts_user_id_users", ondelete="CASCADE"),
        sa.CheckConstraint("contacts >= 0", name="ck_contact_counts_not_negative"),
    )
    op.execute("INSERT INTO contact_counts (user_id, contacts) SELECT user_id, count(*) FROM contacts GROUP BY user_id")


def downgrade() -> None:
    op.drop_table("contact_counts")
