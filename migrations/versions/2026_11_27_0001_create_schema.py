"""Create users, contacts and refresh tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", big_id, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("hashed_password", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False, server_default="user"),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("is_verified", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("avatar_url", sa.String(500), nullable=True),
        sa.Column("token_version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", timestamp, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", timestamp, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.CheckConstraint("role in ('user', 'admin')", name="ck_users_role"),
        sqlite_autoincrement=True,  # never reuse the id of a deleted row
    )
    op.create_index("uq_users_email", "users", ["email"], unique=True)
    op.create_index("ix_users_role_id", "users", ["role", "id"])

    op.create_table(
        "contacts",
        sa.Column("id", big_id, primary_key=True),
        sa.Column("user_id", big_id, nullable=False),
        sa.Column("first_name", sa.String(100), nullable=False),
        sa.Column("last_name", sa.String(100), nullable=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("phone", sa.String(50), nullable=True),
        sa.Column("birthday", sa.Date(), nullable=True),
        sa.Column("birthday_key", sa.SmallInteger(), nullable=True),
        sa.Column("notes", sa.String(2000), nullable=True),
        sa.Column("search_text", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", timestamp, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", timestamp, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_contacts"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_contacts_user_id_users", ondelete="CASCADE"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_contacts_user_id_id", "contacts", ["user_id", "id"])
    op.create_index("ix_contacts_user_id_birthday_key", "contacts", ["user_id", "birthday_key"])
    op.create_index("uq_contacts_user_id_email", "contacts", ["user_id", sa.text("lower(email)")], unique=True)

    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Substring search within one user's contacts: a trigram GIN index that also holds user_id. Both
        # extensions ship with PostgreSQL's contrib; where they are missing, search still works, unindexed.
        available = set(
            bind.execute(
                sa.text("SELECT name FROM pg_available_extensions WHERE name IN ('pg_trgm', 'btree_gin')")
            ).scalars()
        )
        if available == {"pg_trgm", "btree_gin"}:
            op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
            op.execute(
                "CREATE INDEX ix_contacts_search_text_trgm ON contacts USING gin (user_id, search_text gin_trgm_ops)"
            )

    op.create_table(
        "refresh_tokens",
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("family_id", sa.String(64), nullable=False),
        sa.Column("user_id", big_id, nullable=False),
        sa.Column("expires_at", timestamp, nullable=False),
        sa.Column("used_at", timestamp, nullable=True),
        sa.Column("revoked_at", timestamp, nullable=True),
        sa.Column("created_at", timestamp, nullable=False),
        sa.PrimaryKeyConstraint("jti", name="pk_refresh_tokens"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_refresh_tokens_user_id_users", ondelete="CASCADE"),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])
    op.create_index("ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_table("refresh_tokens")
    op.drop_table("contacts")
    op.drop_table("users")
