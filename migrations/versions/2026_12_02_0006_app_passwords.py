"""App passwords: one per device or program (CardDAV clients), stored as a keyed hash.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "app_passwords",
        sa.Column("id", big_id, autoincrement=True, nullable=False),
        sa.Column("user_id", big_id, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("token_version", sa.Integer(), nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("last_used_at", timestamp, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_app_passwords_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_app_passwords"),
    )
    op.create_index("uq_app_passwords_digest", "app_passwords", ["digest"], unique=True)
    op.create_index("ix_app_passwords_user_id", "app_passwords", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_app_passwords_user_id", table_name="app_passwords")
    op.drop_index("uq_app_passwords_digest", table_name="app_passwords")
    op.drop_table("app_passwords")
