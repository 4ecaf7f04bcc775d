"""Databases for the benchmark: created, migrated with the app's own migrations, and filled with fast bulk SQL.

Users are written straight into the database with one argon2id hash made once by the app's hasher, already
verified; access tokens are minted with the app's own `access_token` and the JWT secret the servers get.
Contacts are shuffled across the table (as in a database that has lived for a while, each user's rows are
scattered over the heap rather than stored side by side), and `search_text` / `birthday_key` are filled the way
`app/contacts/models.py` computes them.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
import zlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from pydantic import SecretStr

from app.auth.tokens import access_token
from app.contacts.entries import e164
from app.contacts.models import birthday_key, search_text
from app.core.config import Settings
from app.core.db import create_engine
from app.core.migrations import upgrade_to_head
from app.core.security import password_hasher

FIRST_NAMES = (
    "Ada Alan Grace Linus Guido Barbara Donald Edsger Frances Ken Dennis Margaret Tim Radia Vint Bjarne Anders "
    "Yukihiro Rasmus James Larry Brendan John Niklaus Tony Leslie Butler Shafi Silvio Judea Yann Geoffrey Yoshua "
    "Fei Andrew Daphne Cynthia Lynn Shirley Hedy Annie Mary Evelyn Kathleen Jean Betty Marlyn Ruth Adele Sophie "
    "Carol Joan Karen Lois Susan Elaine Martha Irene Hilda Olga Nadia Ingrid Astrid Sigrid Freya Leila Amara "
    "Chidi Kwame Kofi Ama Zainab Aisha Omar Tariq Hamid Reza Darius Mina Sora Haruki Kenji Aiko Mei Wei Jun Li "
    "Arjun Priya Ravi Anil Sunita Deepa Vikram Carlos Lucia Mateo Sofia Diego Elena Pablo Ines Tomas Marta"
).split()
LAST_NAMES = (
    "Lovelace Turing Hopper Torvalds Rossum Liskov Knuth Dijkstra Allen Thompson Ritchie Hamilton Lee Perlman "
    "Cerf Stroustrup Hejlsberg Matsumoto Lerdorf Gosling Wall Eich Backus Wirth Hoare Lamport Lampson Goldwasser "
    "Micali Pearl LeCun Hinton Bengio Ng Koller Dwork Conway Jackson Lamarr Easley Keller Clarke Wescoff "
    "Bartik Holberton Teitelbaum Meltzer Goldstine Wilson Shaw Clarke Johnson Petersen Novak Horvat Kovacs "
    "Nagy Szabo Varga Toth Kiss Molnar Farkas Balogh Papp Lakatos Takacs Juhasz Meszaros Olah Simon Racz Fekete "
    "Okafor Adeyemi Mensah Owusu Boateng Diallo Traore Keita Ndiaye Sow Haddad Khalil Nasser Rahimi Tehrani "
    "Sato Suzuki Takahashi Tanaka Watanabe Ito Yamamoto Nakamura Kobayashi Kato Wang Zhang Liu Chen Yang "
    "Huang Zhao Zhou Sharma Verma Gupta Patel Reddy Nair Iyer Menon Rao Garcia Martinez Rodriguez Lopez "
    "Gonzalez Perez Sanchez Ramirez Torres Flores Rivera Gomez Diaz Morales Ortiz Castillo Romero Alvarez "
    "Ruiz Jimenez Moreno Munoz Alonso Gutierrez Navarro Dominguez Vazquez Ramos Gil Serrano Blanco Molina "
    "Delgado Castro Ortega Rubio Marin Sanz Iglesias Medina Garrido Cortes Santos Guerrero Lozano Cano Prieto "
    "Mendez Cruz Calvo Gallego Vidal Leon Herrera Marquez Pena Flores Cabrera Campos Vega Fuentes Carrasco "
    "Diez Caballero Reyes Nieto Aguilar Pascual Santana Herrero Lorenzo Montero Hidalgo Gimenez Ibanez"
).split()
# A last name that is no substring of any other name nor of "example.com": searching it matches exactly the
# contacts carrying it (about 1 in len(LAST_NAMES)), a realistic "type a surname" search.
SEARCH_TERM = "okafor"
PASSWORD = "bench-password-not-secret"  # noqa: S105 - a throwaway benchmark credential
EPOCH = date(1940, 1, 1)


@dataclass(frozen=True)
class DataPlan:
    bench_users: int  # users of the read/write scenarios
    contacts_per_bench_user: int
    growth_sizes: tuple[int, ...]  # one user per size
    total_contacts: int  # filler users (100 contacts each) bring the table to this size

    @property
    def growth_user_ids(self) -> tuple[int, ...]:
        return tuple(self.bench_users + 1 + i for i in range(len(self.growth_sizes)))

    def spec(self) -> list[tuple[int, int, int]]:
        """(first user id, last user id, contacts per user) for every group of users."""
        groups = [(1, self.bench_users, self.contacts_per_bench_user)]
        groups += [(uid, uid, size) for uid, size in zip(self.growth_user_ids, self.growth_sizes, strict=True)]
        so_far = self.bench_users * self.contacts_per_bench_user + sum(self.growth_sizes)
        filler = max(0, self.total_contacts - so_far) // 100
        if filler:
            first = self.bench_users + len(self.growth_sizes) + 1
            groups.append((first, first + filler - 1, 100))
        return groups

    @property
    def user_count(self) -> int:
        return max(last for _, last, _ in self.spec())

    @property
    def contact_count(self) -> int:
        return sum((last - first + 1) * n for first, last, n in self.spec())


@dataclass
class Seeded:
    """What the scenarios need to know about the data."""

    plan: DataPlan
    tokens: dict[int, str] = field(default_factory=dict)  # user id -> access token
    contacts: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # bench user -> [(id, last name)]
    seconds: float = 0.0


def bench_settings(jwt_secret: str, database_url: str = "sqlite+aiosqlite:///:memory:") -> Settings:
    return Settings(
        _env_file=None,
        database_url=database_url,
        jwt_secret=SecretStr(jwt_secret),
        access_token_ttl=3 * 3600,
        environment="production",
        mail_backend="console",  # production refuses to run without a mailer; the benchmark sends no mail
    )


def mint_tokens(settings: Settings, user_ids: list[int]) -> dict[int, str]:
    return {uid: access_token(settings, uid, 0) for uid in user_ids}


async def migrate(database_url: str, jwt_secret: str) -> None:
    engine = create_engine(bench_settings(jwt_secret, database_url))
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


def hash_password_once(jwt_secret: str) -> str:
    return password_hasher(bench_settings(jwt_secret)).hash(PASSWORD)


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------------------------


async def create_postgres(admin_dsn: str, database: str) -> None:
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{database}"')
    finally:
        await connection.close()


async def drop_postgres(admin_dsn: str, database: str) -> None:
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await connection.close()


# The columns of a contact in the schema before model v2 (the revisions harness seeds an older tree's schema,
# which the newer tree's migrations then carry over) and in today's.
V1_COLUMNS = ("user_id", "first_name", "last_name", "email", "phone", "birthday", "birthday_key", "search_text")
V2_COLUMNS = (
    "id",
    "user_id",
    "uid",
    "first_name",
    "last_name",
    "organization",
    "email",
    "phone",
    "emails",
    "phones",
    "addresses",
    "labels",
    "favorite",
    "birthday",
    "birthday_key",
    "search_text",
    "change_seq",
)
BENCH_LABELS = ("family", "work", "friends", "school", "neighbours")
ORGANIZATIONS = ("Analytical Engines", "Bletchley Park", "Bell Labs", "Xerox PARC", "CERN", None, None)
CITIES = ("London", "Paris", "Berlin", "Lagos", "Tokyo", "Lima", "Pune", "Oslo")


@dataclass
class Rows:
    """Contact rows in `columns` order, shuffled across users, and (v2) the lookup tables the repository mirrors
    from them: `emails` (contact_id, value_lower, user_id) and `labels` (contact_id, name, user_id)."""

    columns: tuple[str, ...]
    contacts: list[tuple[Any, ...]]
    emails: list[tuple[int, str, int]] = field(default_factory=list)
    labels: list[tuple[int, str, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.contacts)


def contact_rows(plan: DataPlan, check: bool = True, shape: str = "v2") -> Rows:
    """Every contact of the plan, shuffled (deterministically) across users.

    Names, phones and birthday derive from a hash of (user, n); a third of the contacts have no birthday. In the
    v2 shape each contact is as rich as a phone's: two emails (home, work), two phones (mobile with its E.164
    form, work), a home address, an organisation for most, a label for most, a favourite in ten; ids follow the
    shuffled order (each user's rows scattered over the heap) and each user's change numbers follow the ids.
    `search_text`, `birthday_key` and `e164` are what the app computes (checked on a sample unless `check` is
    off)."""
    nf, nl = len(FIRST_NAMES), len(LAST_NAMES)
    first_lower = [name.lower() for name in FIRST_NAMES]
    last_lower = [name.lower() for name in LAST_NAMES]
    days = [EPOCH + timedelta(days=k) for k in range(29000)]
    keys = [birthday_key(day) for day in days]
    crc32 = zlib.crc32
    drafts: list[tuple[int, int, int]] = []  # (user, n, hash)
    for first, last, per_user in plan.spec():
        for uid in range(first, last + 1):
            prefix = f"{uid}:"
            drafts.extend((uid, n, crc32((prefix + str(n)).encode()) & 0x7FFFFFFF) for n in range(1, per_user + 1))
    random.Random(20261127).shuffle(drafts)
    rows = Rows(V1_COLUMNS if shape == "v1" else V2_COLUMNS, [])
    seq: dict[int, int] = {}
    for position, (uid, n, h) in enumerate(drafts, start=1):
        fi, li = h % nf, (h // nf) % nl
        first_name, last_name = FIRST_NAMES[fi], LAST_NAMES[li]
        email = f"{first_lower[fi]}.{last_lower[li]}.{n}@example.com"
        mobile = f"+1 202 {2 + h % 8}{h % 1_000_000:06d}"
        if (h // 7919) % 3 == 0:
            birthday, key = None, None
        else:
            k = (h // 13) % 29000
            birthday, key = days[k], keys[k]
        if shape == "v1":
            text = f"{first_lower[fi]} {last_lower[li]} {email}"
            rows.contacts.append((uid, first_name, last_name, email, mobile, birthday, key, text))
            continue
        work_email = f"{first_lower[fi]}.{n}@work.example"
        organization = ORGANIZATIONS[(h // 31) % len(ORGANIZATIONS)]
        emails = [
            {"value": email, "label": "home", "primary": True},
            {"value": work_email, "label": "work", "primary": False},
        ]
        phones: list[dict[str, Any]] = [
            {"value": mobile, "e164": "+1202" + mobile[7:], "label": "mobile", "primary": True},
            # A national number, entered without a region: kept as entered, no E.164 form.
            {"value": f"(202) 555-{h % 10_000:04d}", "e164": None, "label": "work", "primary": False},
        ]
        addresses = [
            {
                "label": "home",
                "street": f"{1 + h % 200} {last_name} Street",
                "locality": CITIES[(h // 17) % len(CITIES)],
                "region": None,
                "postal_code": f"{h % 100_000:05d}",
                "country": None,
                "primary": True,
            }
        ]
        labels = [BENCH_LABELS[(h // 5) % len(BENCH_LABELS)]] if h % 4 else []
        seq[uid] = seq.get(uid, 0) + 1
        text = search_text(
            first_name,
            last_name,
            organization,
            emails=[email, work_email],
            phones=[part for phone in phones for part in (phone["value"], phone["e164"])],
        )
        rows.contacts.append(
            (
                position,
                uid,
                f"bench-{uid}-{n}",
                first_name,
                last_name,
                organization,
                email,
                mobile,
                json.dumps(emails),
                json.dumps(phones),
                json.dumps(addresses),
                json.dumps(labels),
                h % 10 == 0,
                birthday,
                key,
                text,
                seq[uid],
            )
        )
        rows.emails += [(position, email, uid), (position, work_email, uid)]
        rows.labels += [(position, label, uid) for label in labels]
    for row in rows.contacts[:: max(1, len(rows) // 1000)] if check and shape == "v2" else ():
        phones = json.loads(row[9])
        assert [p["e164"] for p in phones] == [e164(p["value"], None) for p in phones], row
        assert row[15] == search_text(
            row[3],
            row[4],
            row[5],
            emails=[e["value"] for e in json.loads(row[8])],
            phones=[part for p in phones for part in (p["value"], p["e164"])],
        ), row
        assert row[14] == birthday_key(row[13]), row
    return rows


# What the app keeps up to date contact by contact (app/contacts/repository.py), computed once for the bulk load:
# the same statement as the migration that introduced the table.
COUNT_CONTACTS = {
    "v1": "INSERT INTO contact_counts (user_id, contacts) SELECT user_id, count(*) FROM contacts GROUP BY user_id",
    "v2": "INSERT INTO contact_counts (user_id, contacts, change_seq) "
    "SELECT user_id, count(*), max(change_seq) FROM contacts GROUP BY user_id",
}


async def seed_postgres(dsn: str, plan: DataPlan, hashed_password: str, rows: Rows) -> dict[str, float]:
    """Fill the database (binary COPY, then the indexes); returns seconds per step."""
    steps: dict[str, float] = {}
    connection = await asyncpg.connect(dsn)
    try:
        start = time.perf_counter()
        # Rows are consistent by construction: skip the per-row foreign-key triggers, and build the secondary
        # indexes once at the end rather than row by row (same definitions, read back from pg_indexes).
        await connection.execute("SET session_replication_role = replica")
        indexes = await connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'contacts' AND indexname <> 'pk_contacts'"
        )
        for row in indexes:
            await connection.execute(f'DROP INDEX "{row["indexname"]}"')
        await connection.execute(
            """INSERT INTO users (id, email, hashed_password, role, is_active, is_verified, token_version)
               SELECT g, 'bench' || g || '@bench.example', $1, 'user', true, true, 0
               FROM generate_series(1, $2) g""",
            hashed_password,
            plan.user_count,
        )
        await connection.execute("SELECT setval(pg_get_serial_sequence('users', 'id'), $1)", plan.user_count)
        await connection.copy_records_to_table("contacts", records=rows.contacts, columns=list(rows.columns))
        if rows.columns == V2_COLUMNS:
            await connection.copy_records_to_table(
                "contact_emails", records=rows.emails, columns=["contact_id", "value_lower", "user_id"]
            )
            await connection.copy_records_to_table(
                "contact_labels", records=rows.labels, columns=["contact_id", "name", "user_id"]
            )
            await connection.execute("SELECT setval(pg_get_serial_sequence('contacts', 'id'), $1)", len(rows))
        await connection.execute(COUNT_CONTACTS["v2" if rows.columns == V2_COLUMNS else "v1"])
        await connection.execute("RESET session_replication_role")
        steps["copy"] = time.perf_counter() - start
    finally:
        await connection.close()

    # The trigram GIN index takes longest and builds on one core: build it beside the B-trees.
    start = time.perf_counter()
    gin = [row["indexdef"] for row in indexes if " USING gin " in row["indexdef"]]
    btrees = [row["indexdef"] for row in indexes if " USING gin " not in row["indexdef"]]

    async def build(definitions: list[str]) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SET maintenance_work_mem = '1GB'")
            for definition in definitions:
                await conn.execute(definition)
        finally:
            await conn.close()

    await asyncio.gather(build(gin), build(btrees))
    steps["indexes"] = time.perf_counter() - start
    start = time.perf_counter()
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("VACUUM ANALYZE users")
        await connection.execute("VACUUM ANALYZE contacts")
    finally:
        await connection.close()
    steps["vacuum"] = time.perf_counter() - start
    return steps


async def bench_contacts_postgres(dsn: str, bench_users: int) -> dict[int, list[tuple[int, str]]]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT user_id, id, last_name FROM contacts WHERE user_id <= $1 ORDER BY user_id, id", bench_users
        )
    finally:
        await connection.close()
    out: dict[int, list[tuple[int, str]]] = {}
    for row in rows:
        out.setdefault(row["user_id"], []).append((row["id"], row["last_name"]))
    return out


# ---------------------------------------------------------------------------------------------------------------
# SQLite
# ---------------------------------------------------------------------------------------------------------------


def seed_sqlite(path: Path, plan: DataPlan, hashed_password: str, rows: Rows) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA synchronous=OFF")
        indexes = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'contacts' AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            connection.execute(f'DROP INDEX "{name}"')
        stamp = "2026-11-27 12:00:00.000000"
        connection.executemany(
            "INSERT INTO users (id, email, hashed_password, role, is_active, is_verified, token_version, "
            "created_at, updated_at) VALUES (?, ?, ?, 'user', 1, 1, 0, ?, ?)",
            (
                (uid, f"bench{uid}@bench.example", hashed_password, stamp, stamp)
                for uid in range(1, plan.user_count + 1)
            ),
        )
        columns = (*rows.columns, "created_at", "updated_at")
        birthday = rows.columns.index("birthday")
        connection.executemany(
            f"INSERT INTO contacts ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",  # noqa: S608 - our own column names
            (
                (
                    *row[:birthday],
                    row[birthday].isoformat() if row[birthday] else None,
                    *row[birthday + 1 :],
                    stamp,
                    stamp,
                )
                for row in rows.contacts
            ),
        )
        connection.executemany(
            "INSERT INTO contact_emails (contact_id, value_lower, user_id) VALUES (?, ?, ?)", rows.emails
        )
        connection.executemany("INSERT INTO contact_labels (contact_id, name, user_id) VALUES (?, ?, ?)", rows.labels)
        connection.execute(COUNT_CONTACTS["v2" if rows.columns == V2_COLUMNS else "v1"])
        connection.commit()
        for _, sql in indexes:
            connection.execute(sql)
        connection.execute("ANALYZE")
        connection.commit()
    finally:
        connection.close()


def prepare_sqlite(path: Path, plan: DataPlan, jwt_secret: str, hashed_password: str, rows: Rows) -> float:
    """Create, migrate (the app's migrations) and fill a SQLite database file; seconds taken."""
    start = time.perf_counter()
    asyncio.run(migrate(f"sqlite+aiosqlite:///{path}", jwt_secret))
    seed_sqlite(path, plan, hashed_password, rows)
    return time.perf_counter() - start
