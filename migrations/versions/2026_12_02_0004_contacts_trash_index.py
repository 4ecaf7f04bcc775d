"""The trash's index: a partial index of trashed contacts only, by user and deletion time.

It serves `GET /contacts/trash` (one user's trash, newest first, and its count) and the clean-up's search for
contacts trashed longer than TRASH_RETENTION_DAYS, without walking live contacts: it holds only trashed rows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRASHED = sa.text("deleted_at IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_contacts_trash",
        "contacts",
        ["user_id", "deleted_at", "id"],
        postgresql_where=TRASHED,
        sqlite_where=TRASHED,
    )


def downgrade() -> None:
    op.drop_index("ix_contacts_trash", table_name="contacts")
