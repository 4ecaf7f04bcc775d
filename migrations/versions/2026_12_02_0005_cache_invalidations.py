"""Invalidations that outlive their worker: the keys of each committed write whose cache tombstones could not be
placed, recorded in the write's own transaction and replayed by any worker (app/core/cache/durable.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cache_invalidations",
        sa.Column("id", big_id, autoincrement=True, nullable=False),
        sa.Column("keys", sa.Text(), nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cache_invalidations"),
    )


def downgrade() -> None:
    op.drop_table("cache_invalidations")
