"""The Alembic migrations on a fresh database: upgrade to head, downgrade to base, upgrade again; and the ORM
metadata describes exactly the schema they build."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace

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
import app.core.cache.durable
import app.users.models  # noqa: F401 - every table on the metadata
from app.core.db import Base
from app.core.migrations import alembic_config, downgrade_to_base, upgrade_to_head
from tests.servers import postgres_admin_execute

APP_TABLES = {
    "users",
    "contacts",
    "refresh_tokens",
    "contact_counts",
    "contact_labels",
    "contact_emails",
    "contact_tombstones",
    "idempotency_keys",
    "cache_invalidations",
    "app_passwords",
    "import_jobs",
    "import_job_chunks",
}
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
    assert {"uq_users_email", "uq_contacts_user_id_uid", "ix_contacts_user_id_birthday_key"} <= found["indexes"]
    # Email uniqueness is an application rule since 0003 (imports and restores may hold duplicates).
    assert "uq_contacts_user_id_email" not in found["indexes"]
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


def _upgrade_to(revision: str):
    def run(connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    return run


def _downgrade_to(revision: str):
    def run(connection) -> None:
        command.downgrade(alembic_config(connection), revision)

    return run


V1_CONTACTS = [
    # user index, first, last, email, phone
    (0, "Ada", "Lovelace", "Ada@Example.com", "+44 20 7946 0958"),
    (0, "Grace", None, None, "555-0199"),  # national: no region to read it in yet
    (1, "Émile", "Zola", "ÉMILE@paris.example", None),
    (0, "Alan", "Turing", "alan@example.com", "+1 555 0100 ext. 7"),  # + but not a valid number
    (1, "Bob", None, None, None),
]


async def _seed_v1(engine: AsyncEngine) -> tuple[list[int], list[int]]:
    """A database at 0002 holding users and contacts as today's application writes them; the last contact of the
    first user deleted (so that its id is a gap a rebuilt table must not give again)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade_to("0002"))
        for email in ("a@example.com", "b@example.com", "c@example.com"):
            await connection.execute(
                text("INSERT INTO users (email, hashed_password) VALUES (:email, 'x')"), {"email": email}
            )
        users = list((await connection.execute(text("SELECT id FROM users ORDER BY id"))).scalars())
        ids = []
        for user, first, last, email, phone in [*V1_CONTACTS, (0, "Gone", None, None, None)]:
            values = {"u": users[user], "f": first, "l": last, "e": email, "p": phone}
            values["s"] = " ".join(v for v in (first, last, email) if v).lower()
            result = await connection.execute(
                text(
                    "INSERT INTO contacts (user_id, first_name, last_name, email, phone, search_text) "
                    "VALUES (:u, :f, :l, :e, :p, :s) RETURNING id"
                ),
                values,
            )
            ids.append(result.scalar_one())
        await connection.execute(text("DELETE FROM contacts WHERE id = :id"), {"id": ids.pop()})
        await connection.execute(
            text(
                "INSERT INTO contact_counts (user_id, contacts) SELECT user_id, count(*) FROM contacts GROUP BY user_id"
            )
        )
    return users, ids


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


async def test_contact_model_v2_migration_carries_every_contact_over(fresh_engine):
    engine = fresh_engine
    users, ids = await _seed_v1(engine)

    await upgrade_to_head(engine)

    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT * FROM contacts ORDER BY id"))
        rows = {row.id: row for row in (SimpleNamespace(**mapping) for mapping in result.mappings().all())}
        counts = dict((await connection.execute(text("SELECT user_id, change_seq FROM contact_counts"))).all())
        mirrored = set(
            (await connection.execute(text("SELECT contact_id, value_lower, user_id FROM contact_emails"))).all()
        )
        labels = (await connection.execute(text("SELECT count(*) FROM contact_labels"))).scalar()
    assert sorted(rows) == ids
    ada, grace, emile, alan, bob = (rows[i] for i in ids)
    assert (ada.email, ada.phone) == ("Ada@Example.com", "+44 20 7946 0958")
    assert _json(ada.emails) == [{"value": "Ada@Example.com", "label": None, "primary": True}]
    assert _json(ada.phones) == [{"value": "+44 20 7946 0958", "e164": "+442079460958", "label": None, "primary": True}]
    assert _json(grace.emails) == []
    assert _json(grace.phones) == [{"value": "555-0199", "e164": None, "label": None, "primary": True}]
    assert _json(alan.phones)[0]["e164"] is None
    assert _json(emile.emails) == [{"value": "ÉMILE@paris.example", "label": None, "primary": True}]
    assert _json(bob.phones) == _json(bob.emails) == _json(bob.labels) == []
    for row in rows.values():
        assert str(uuid.UUID(row.uid, version=4)) == row.uid
        assert (row.version, bool(row.favorite), row.deleted_at, row.vcard_extra) == (1, False, None, None)
    assert len({row.uid for row in rows.values()}) == len(rows)
    # Numbered per user in id order; each user's last number in contact_counts.
    assert [(ada.change_seq, grace.change_seq, alan.change_seq), (emile.change_seq, bob.change_seq)] == [
        (1, 2, 3),
        (1, 2),
    ]
    assert counts == {users[0]: 3, users[1]: 2}
    assert ada.search_text == "ada lovelace ada@example.com 442079460958"
    assert grace.search_text == "grace 5550199"
    assert emile.search_text == "émile zola émile@paris.example"
    assert mirrored == {
        (ada.id, "ada@example.com", users[0]),
        (alan.id, "alan@example.com", users[0]),
        (emile.id, "émile@paris.example", users[1]),
    }
    assert labels == 0


async def test_contact_model_v2_migration_never_gives_a_deleted_contacts_id_again(fresh_engine):
    engine = fresh_engine
    users, ids = await _seed_v1(engine)

    await upgrade_to_head(engine)

    async with engine.begin() as connection:
        new_id = (
            await connection.execute(
                text("INSERT INTO contacts (user_id, first_name, uid) VALUES (:u, 'New', 'u-1') RETURNING id"),
                {"u": users[0]},
            )
        ).scalar_one()
    assert new_id == ids[-1] + 2  # the deleted contact's id (ids[-1] + 1) stays unused


async def test_contact_model_v2_downgrade_restores_the_0002_shape(fresh_engine):
    engine = fresh_engine
    users, ids = await _seed_v1(engine)
    await upgrade_to_head(engine)
    async with engine.begin() as connection:
        # A v2 book: one contact in the trash, one email shared by two live contacts (as an import may leave it).
        await connection.execute(
            text("UPDATE contacts SET deleted_at = CURRENT_TIMESTAMP WHERE id = :id"), {"id": ids[1]}
        )
        await connection.execute(
            text("UPDATE contacts SET email = 'ADA@example.com', nickname = 'n' WHERE id = :id"), {"id": ids[3]}
        )
        await connection.execute(
            text("UPDATE contact_counts SET contacts = contacts - 1 WHERE user_id = :u"), {"u": users[0]}
        )

    async with engine.begin() as connection:
        await connection.run_sync(_downgrade_to("0002"))

    found = await schema(engine)
    assert found["tables"] == {"users", "contacts", "refresh_tokens", "contact_counts", "alembic_version"}
    assert "uq_contacts_user_id_email" in found["indexes"]
    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM contacts ORDER BY id"))).mappings().all()
        counts = dict((await connection.execute(text("SELECT user_id, contacts FROM contact_counts"))).all())
        columns = {column["name"] for column in await connection.run_sync(lambda c: inspect(c).get_columns("contacts"))}
    assert columns == {
        "id", "user_id", "first_name", "last_name", "email", "phone", "birthday", "birthday_key", "notes",
        "search_text", "created_at", "updated_at",
    }  # fmt: skip
    by_id = {row["id"]: row for row in rows}
    assert sorted(by_id) == [ids[0], ids[2], ids[3], ids[4]]  # the trashed one is gone
    assert (by_id[ids[0]]["email"], by_id[ids[0]]["phone"]) == ("Ada@Example.com", "+44 20 7946 0958")
    assert by_id[ids[3]]["email"] is None  # the older contact keeps the shared email
    assert by_id[ids[3]]["phone"] == "+1 555 0100 ext. 7"
    assert by_id[ids[0]]["search_text"] == "ada lovelace ada@example.com"
    assert by_id[ids[2]]["search_text"] == "émile zola émile@paris.example"
    assert counts == {users[0]: 2, users[1]: 2}
