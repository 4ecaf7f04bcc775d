"""The Alembic migrations on a fresh database: upgrade to head, downgrade to base, upgrade again; and the ORM
metadata describes exactly the schema they build."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import app.auth.models
import app.contacts.models
import app.users.models  # noqa: F401 - every table on the metadata
from app.core.db import Base
from app.core.migrations import alembic_config, downgrade_to_base, upgrade_to_head
from tests.servers import postgres_admin_execute

APP_TABLES = {"users", "contacts", "refresh_tokens", "contact_counts"}
# Created by the migration only where pg_trgm and btree_gin exist; deliberately not on the ORM metadata.
POSTGRES_ONLY_INDEXES = {"ix_contacts_search_text_trgm"}


@pytest.fixture(params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres_only)])
async def fresh_engine(request, tmp_path) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database of this test's own: a temporary SQLite file, or a throwaway PostgreSQL
    database (created on the test server, dropped afterwards)."""
    if request.param == "sqlite":
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}", poolclass=pool.NullPool)
        yield engine
        await engine.dispose()
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    name = f"contacts_migrations_{secrets.token_hex(4)}"
    await postgres_admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=name)
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        yield engine
    finally:
        await engine.dispose()
        await postgres_admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def schema(engine: AsyncEngine) -> dict[str, set[str]]:
    """Tables, and every index and sequence, of the database's default schema."""

    def read(connection) -> dict[str, set[str]]:
        inspector = inspect(connection)
        tables = set(inspector.get_table_names())
        if connection.dialect.name == "sqlite":
            # SQLite's inspector skips expression indexes (lower(email)); its catalogue lists them all.
            catalogue = text("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            indexes = set(connection.execute(catalogue).scalars())
        else:
            indexes = {index["name"] for table in tables for index in inspector.get_indexes(table)}
        sequences = set(inspector.get_sequence_names()) if connection.dialect.name == "postgresql" else set()
        return {"tables": tables, "indexes": indexes, "sequences": sequences}

    async with engine.connect() as connection:
        return await connection.run_sync(read)


async def current_revisions(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_heads()))


async def metadata_diff(engine: AsyncEngine) -> list:
    def include_object(obj, name, type_, reflected, compare_to) -> bool:
        return not (type_ == "index" and name in POSTGRES_ONLY_INDEXES)

    def compare(connection) -> list:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "include_object": include_object})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as connection:
        return await connection.run_sync(compare)


async def test_migrations_upgrade_fresh_database_to_head(fresh_engine):
    engine = fresh_engine

    await upgrade_to_head(engine)

    found = await schema(engine)
    assert found["tables"] == APP_TABLES | {"alembic_version"}
    assert {"uq_users_email", "uq_contacts_user_id_email", "ix_contacts_user_id_birthday_key"} <= found["indexes"]
    assert await current_revisions(engine) == {head_revision()}


async def test_migrations_downgrade_to_base_leaves_nothing_behind(fresh_engine):
    engine = fresh_engine
    await upgrade_to_head(engine)

    await downgrade_to_base(engine)

    found = await schema(engine)
    assert found["tables"] <= {"alembic_version"}
    assert found["indexes"] == set()
    assert found["sequences"] == set()
    assert await current_revisions(engine) == set()


async def test_contact_counts_migration_counts_existing_contacts(fresh_engine):
    engine = fresh_engine

    def upgrade_to(revision: str):
        def run(connection) -> None:
            command.upgrade(alembic_config(connection), revision)

        return run

    async with engine.begin() as connection:
        await connection.run_sync(upgrade_to("0001"))
        for email in ("a@example.com", "b@example.com", "c@example.com"):
            await connection.execute(
                text("INSERT INTO users (email, hashed_password) VALUES (:email, 'x')"), {"email": email}
            )
        ids = list((await connection.execute(text("SELECT id FROM users ORDER BY id"))).scalars())
        for user_id, contacts in zip(ids, (3, 1, 0), strict=True):
            for n in range(contacts):
                await connection.execute(
                    text("INSERT INTO contacts (user_id, first_name, search_text) VALUES (:u, :n, :s)"),
                    {"u": user_id, "n": f"c{n}", "s": f"c{n}"},
                )

    await upgrade_to_head(engine)

    async with engine.connect() as connection:
        counts = dict((await connection.execute(text("SELECT user_id, contacts FROM contact_counts"))).all())
    assert counts == {ids[0]: 3, ids[1]: 1}


async def test_migrations_upgrade_again_after_downgrade(fresh_engine):
    engine = fresh_engine
    await upgrade_to_head(engine)
    first = await schema(engine)
    await downgrade_to_base(engine)

    await upgrade_to_head(engine)

    assert await schema(engine) == first
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO users (email, hashed_password) VALUES ('a@example.com', 'x')"))
        count = await connection.scalar(text("SELECT count(*) FROM users"))
    assert count == 1


async def test_orm_metadata_matches_migrated_schema(fresh_engine):
    engine = fresh_engine
    await upgrade_to_head(engine)

    assert await metadata_diff(engine) == []
