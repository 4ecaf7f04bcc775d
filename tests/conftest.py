"""Test fixtures: real PostgreSQL (or SQLite with `--db sqlite`), real Redis, the app in process.

Isolation: every test that touches data starts from empty tables (the schema itself is built once per session
by the Alembic migrations) and an empty Redis database of its own index, so tests may run real concurrency
(many sessions and connections) and real server processes against the same database.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.core.cache import Backend, Cache, cache
from app.core.config import Settings
from app.core.db import Database
from app.core.migrations import upgrade_to_head
from app.core.rate_limit import RateLimiter
from app.main import create_app
from tests.servers import EmbeddedPostgres, RedisProcess, embedded_only, free_port, port_open, throwaway_database
from tests.topologies import redis_cluster, redis_sentinel  # noqa: F401 - session fixtures: a Cluster, a Sentinel group

TEST_REDIS_DB = 13
TABLES = ("refresh_tokens", "contacts", "users", "cache_invalidations")
MakeCache = Callable[..., Cache]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=("postgresql", "sqlite"),
        default=os.environ.get("CONTACTS_TEST_DB", "postgresql"),
        help="database engine to run the suite on (default: postgresql; env CONTACTS_TEST_DB)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--db") == "sqlite":
        skip = pytest.mark.skip(reason="needs PostgreSQL (run without --db sqlite)")
        for item in items:
            if "postgres_only" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def db_engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--db"))


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A URL of a PostgreSQL server's `postgres` database that the tests may create databases on."""
    if os.environ.get("DATABASE_URL", "").startswith("postgresql"):
        yield os.environ["DATABASE_URL"]
        return
    if port_open("127.0.0.1", 5432) and not embedded_only():
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
        return
    server = EmbeddedPostgres().start()
    try:
        yield server.admin_url
    finally:
        server.close()


@pytest.fixture(scope="session")
def database_url(
    db_engine_name: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database of this test session's own: created here, dropped at the end."""
    if db_engine_name == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'contacts.db'}"
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    if os.environ.get("DATABASE_URL", "").startswith("postgresql"):
        # A configured database is used as it is (its owner made it for tests).
        yield make_url(admin_url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        return
    with throwaway_database(admin_url, "contacts_api_test") as url:
        yield url


CLAIM_NAME = "contacts-api-tests"


def _claim_redis_db(host: str, port: int) -> tuple[str, Any]:
    """An empty Redis database index no other test session holds. The claim is a connection of ours, named
    and selected to that index, held open for the session: it leaves no key behind and dies with us."""
    import redis

    probe = redis.Redis(host=host, port=port)
    try:
        held = {int(c["db"]) for c in probe.client_list() if c.get("name") == CLAIM_NAME}
    finally:
        probe.close()
    for index in range(TEST_REDIS_DB, 0, -1):
        if index in held:
            continue
        claim = redis.Redis(host=host, port=port, db=index, single_connection_client=True)
        if claim.dbsize() == 0:
            claim.client_setname(CLAIM_NAME)
            return f"redis://{host}:{port}/{index}", claim
        claim.close()
    raise RuntimeError("no empty Redis database index to run the tests in")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database index of the tests' own; only it is ever flushed."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    if port_open("127.0.0.1", 6379) and not embedded_only():
        url, claim = _claim_redis_db("127.0.0.1", 6379)
        try:
            yield url
        finally:
            claim.flushdb()
            claim.close()
        return
    server = RedisProcess().start()
    try:
        yield server.url
    finally:
        server.close()


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "jwt_secret": "test-secret-" + "x" * 40,
        # Cheap hashing keeps the suite fast; production defaults are OWASP's argon2id minimum.
        "argon2_time_cost": 1,
        "argon2_memory_cost": 1024,
        "argon2_parallelism": 1,
        "cache_op_timeout": 0.2,
        # No background replays of recorded invalidations (their queries would count in query-counting tests);
        # the tests of durable invalidations ask for them.
        "cache_replay_interval": 0,
        # No background runner of import jobs: the tests run each job themselves (app.interchange.jobs.run_job).
        "import_job_interval": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def make_cache() -> AsyncIterator[MakeCache]:
    """Builds caches as the app's lifespan configures its own (`make_cache(settings, backend=None)`), and closes
    them all after the test."""
    made: list[Cache] = []

    def build(settings: Settings, backend: Backend | None = None) -> Cache:
        instance = Cache(settings, backend)
        made.append(instance)
        return instance

    yield build
    for instance in made:
        await instance.close()


class Mailbox:
    """Messages received by the in-process SMTP server."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = BytesParser(policy=default_policy).parsebytes(envelope.content)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"

    async def wait_for(self, to: str, count: int = 1, timeout: float = 5.0) -> list[EmailMessage]:
        """The messages to `to`, once at least `count` have arrived."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = [m for m in self.messages if to.lower() in str(m["To"]).lower()]
            if len(found) >= count:
                return found
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no {count} message(s) to {to} within {timeout} s; got {len(found)}")
            await asyncio.sleep(0.02)

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address.lower() in str(m["To"]).lower()]


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    """A real SMTP server (aiosmtpd) in this process; the app sends its mail here."""
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


@pytest.fixture
def mailbox(smtp_server: tuple[Mailbox, int], clean: None) -> Mailbox:
    box = smtp_server[0]
    box.messages.clear()
    return box


@pytest.fixture(scope="session")
def settings(
    database_url: str, redis_url: str, smtp_server: tuple[Mailbox, int], tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return make_settings(
        database_url=database_url,
        redis_url=redis_url,
        smtp_host="127.0.0.1",
        smtp_port=smtp_server[1],
        smtp_tls="none",
        public_base_url="http://contacts.test",
        media_root=str(tmp_path_factory.mktemp("media")),
    )


@pytest.fixture(scope="session")
async def database(settings: Settings) -> AsyncIterator[Database]:
    database = Database.from_settings(settings)
    await upgrade_to_head(database.engine)
    yield database
    await database.dispose()


@pytest.fixture(scope="session")
async def app(settings: Settings, database: Database) -> AsyncIterator[Any]:
    application = create_app(settings, database)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _empty_tables(database: Database) -> None:
    async with database.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        else:
            for table in TABLES:
                await connection.execute(text(f"DELETE FROM {table}"))
            await connection.execute(text("DELETE FROM sqlite_sequence"))


@pytest.fixture
async def clean(app: Any, database: Database, redis_client: Redis, settings: Settings) -> AsyncIterator[None]:
    """Empty tables, an empty test Redis database, and a cache with fresh state."""
    await _empty_tables(database)
    await redis_client.flushdb()
    await cache.close()
    cache.configure(settings)
    app.state.rate_limiter = RateLimiter(settings)
    yield
    await app.state.mailer.drain()
    cache.before_fill = None


@pytest.fixture
async def db(clean: None, database: Database) -> AsyncIterator[Any]:
    """A session for arranging and checking data directly (commit with `app.core.db.commit`)."""
    async with database.sessionmaker() as session:
        yield session


@pytest.fixture
async def client(clean: None, app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parents[1]
