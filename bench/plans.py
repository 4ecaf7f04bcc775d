"""The SQL the app really sends for list, deep page, search and birthdays (captured from app/contacts/repository.py
while it runs), explained: EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL, EXPLAIN QUERY PLAN plus timed runs on SQLite."""

from __future__ import annotations

import re
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.contacts import queries
from app.contacts.models import birthday_key
from app.contacts.queries import ListQuery
from app.contacts.service import birthday_window
from bench.seed import SEARCH_TERM

PAGE = 20


@dataclass
class Statement:
    query: str  # "list", "deep page", "search", "birthdays"
    part: str  # "count" or "page"
    sql: str
    params: tuple[Any, ...]


async def capture(database_url: str, user_id: int, size: int) -> list[Statement]:
    """Run the repository's queries for one user and keep every statement and its parameters."""
    engine = create_async_engine(database_url)
    seen: list[tuple[str, tuple[Any, ...]]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, tuple(parameters or ())))

    event.listen(engine.sync_engine, "before_cursor_execute", keep)
    today = datetime.now(UTC).date()
    out: list[Statement] = []
    try:
        async with AsyncSession(engine) as session:
            calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("list", lambda: queries.page_by_skip(session, user_id, ListQuery(), 0, PAGE)),
                (
                    "deep page",
                    lambda: queries.page_by_skip(session, user_id, ListQuery(), max(0, size - PAGE), PAGE),
                ),
                ("search", lambda: queries.page_by_skip(session, user_id, ListQuery(q=SEARCH_TERM), 0, PAGE)),
                (
                    "birthdays",
                    lambda: queries.birthdays_page(
                        session, user_id, *birthday_window(today, 7), birthday_key(today) or 0, 0, PAGE
                    ),
                ),
            ]
            for name, call in calls:
                mark = len(seen)
                await call()
                for (sql, params), part in zip(seen[mark:], ("count", "page"), strict=False):
                    out.append(Statement(name, part, sql, params))
    finally:
        await engine.dispose()
    return out


_EXECUTION = re.compile(r"Execution Time: ([0-9.]+) ms")


async def explain_postgres(dsn: str, statements: list[Statement]) -> list[tuple[Statement, str, float]]:
    connection = await asyncpg.connect(dsn)
    out = []
    try:
        for statement in statements:
            await connection.fetch(statement.sql, *statement.params)  # warm, as a running server's cache would be
            rows = await connection.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement.sql, *statement.params)
            text = "\n".join(row[0] for row in rows)
            match = _EXECUTION.search(text)
            out.append((statement, text, float(match.group(1)) if match else 0.0))
    finally:
        await connection.close()
    return out


def explain_sqlite(path: Path, statements: list[Statement], repeats: int = 5) -> list[tuple[Statement, str, float]]:
    connection = sqlite3.connect(path)
    out = []
    try:
        for statement in statements:
            plan = connection.execute("EXPLAIN QUERY PLAN " + statement.sql, statement.params).fetchall()
            text = "\n".join(f"{'  ' * (0 if parent == 0 else 1)}{detail}" for _, parent, _, detail in plan)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                connection.execute(statement.sql, statement.params).fetchall()
                times.append((time.perf_counter() - start) * 1000)
            out.append((statement, text, statistics.median(times)))
    finally:
        connection.close()
    return out


def literal_sql(statement: Statement) -> str:
    """The statement with its parameters inlined, for reading (the plans above were made with bound parameters)."""
    sql = statement.sql
    for index in range(len(statement.params), 0, -1):
        value = statement.params[index - 1]
        rendered = f"'{value}'" if isinstance(value, str) else str(value)
        sql = re.sub(rf"\${index}(?![0-9])(::[A-Z]+)?", rendered, sql)
    return re.sub(r"\s+", " ", sql)
