"""Database engine, sessions and the per-request unit of work."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from prometheus_client import Counter
from sqlalchemy import BigInteger, DateTime, Integer, MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from app.core.config import Settings
from app.core.errors import AppError

logger = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY (which is 64-bit there too).
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


DB_QUERIES = Counter("contacts_api_db_queries", "SQL statements sent to the database")


class QueryCounter:
    """Counts statements sent by this process; tests and benchmarks read deltas of it."""

    def __init__(self) -> None:
        self.value = 0

    def increment(self) -> None:
        self.value += 1
        DB_QUERIES.inc()


query_counter = QueryCounter()


def _count_query(*_: Any) -> None:
    query_counter.increment()


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.database_url
    # Statement parameters (password hashes, emails) never reach an error message or a log line.
    kwargs: dict[str, Any] = {"pool_pre_ping": False, "hide_parameters": True}
    if settings.is_sqlite:
        kwargs["connect_args"] = {"timeout": settings.database_timeout}
    else:
        kwargs.update(
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_timeout,
            pool_recycle=1800,
            connect_args={
                "timeout": settings.database_timeout,
                "command_timeout": settings.database_timeout * 2,
                # asyncpg prepares every statement; after five runs PostgreSQL may switch to a generic plan that
                # cannot know the search pattern or how many rows one user owns, and scans a 100,000-contact book
                # for a search its trigram index answers in 2 ms (measured in bench/). Planning costs ~0.1 ms.
                "server_settings": {"application_name": "contacts-api", "plan_cache_mode": "force_custom_plan"},
            },
        )
    engine = create_async_engine(url, **kwargs)
    sync_engine: Engine = engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", _count_query)
    if settings.is_sqlite:
        event.listen(sync_engine, "connect", _sqlite_pragmas)
    return engine


@dataclass
class Database:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        engine = create_engine(settings)
        return cls(engine, async_sessionmaker(engine, expire_on_commit=False, autoflush=False))

    async def dispose(self) -> None:
        await self.engine.dispose()


AfterCommit = Callable[[], Awaitable[Any]]


def before_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` just before the session's transaction commits (failures are logged, not raised)."""
    session.info.setdefault("before_commit", []).append(callback)


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once the session's transaction has committed (cache invalidation lives here)."""
    session.info.setdefault("after_commit", []).append(callback)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One request, one unit of work: commit on success (before the response is sent), roll back on error.

    A request served wholly from the cache never touches the session, and then pays for none of its
    machinery: commit, rollback and close each cost a greenlet switch, so they run only when a transaction
    was begun (ending it also returns the connection to the pool)."""
    database: Database = request.app.state.db
    session = database.sessionmaker()
    try:
        yield session
    except AppError as exc:
        if exc.keep_changes:
            await commit(session)
        else:
            await _rollback(session)
        raise
    except BaseException:
        await _rollback(session)
        raise
    else:
        await commit(session)
    finally:
        if session.in_transaction():
            await asyncio.shield(session.close())


@asynccontextmanager
async def read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for a read on a path that usually needs no database (a cache miss behind a cache hit's route):
    nothing to commit, closed only if it began a transaction. Cheaper than `SessionDep`, whose dependency
    machinery costs every request, hit or miss."""
    database: Database = request.app.state.db
    session = database.sessionmaker()
    try:
        yield session
    finally:
        if session.in_transaction():
            await asyncio.shield(session.close())


async def commit(session: AsyncSession) -> None:
    """Run the before-commit callbacks, commit, then run the after-commit callbacks, each in order."""
    for callback in session.info.pop("before_commit", []):
        try:
            await callback()
        except AppError:
            raise  # the callback refuses the commit (the cache's strict write policy): the caller rolls back
        except Exception:
            logger.exception("before-commit callback failed")
    if session.in_transaction() or session.new or session.dirty or session.deleted:
        await session.commit()
    callbacks: list[AfterCommit] = session.info.pop("after_commit", [])
    for callback in callbacks:
        try:
            await callback()
        except Exception:
            logger.exception("after-commit callback failed")


async def _rollback(session: AsyncSession) -> None:
    session.info.pop("before_commit", None)
    session.info.pop("after_commit", None)
    if session.in_transaction():
        await asyncio.shield(session.rollback())


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
