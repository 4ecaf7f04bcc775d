"""Imports, exports and duplicate detection on a large address book (issue 13), each phase in a fresh process so
that its peak memory (ru_maxrss) is its own: contacts per second and peak resident memory.

    uv run python -m bench.interchange                     # 100,000 contacts
    uv run python -m bench.interchange --contacts 20000    # quicker

Needs PostgreSQL on 127.0.0.1:5432 (trust) and Redis on 127.0.0.1:6379 (database 12, flushed). Creates the
database `contacts_bench_interchange` and drops it at the end."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import resource
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.seed import bench_settings, create_postgres, drop_postgres, migrate

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "contacts_bench_interchange"
DATABASE_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DATABASE}"
REDIS_URL = "redis://127.0.0.1:6379/12"
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim", "Margaret", "Linus"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman", "Lee"]


def _settings(jwt_secret: str) -> Any:
    settings = bench_settings(jwt_secret, DATABASE_URL)
    return settings.model_copy(update={"redis_url": REDIS_URL, "environment": "development"})


def write_vcards(path: Path, count: int) -> None:
    """A vCard 3.0 file of `count` cards; one in fifty shares an email with an earlier card (duplicates to find)."""
    rng = random.Random(13)
    with path.open("w", encoding="utf-8", newline="") as file:
        for n in range(count):
            first, last = rng.choice(FIRST), f"{rng.choice(LAST)}{n}"
            email = f"p{n - 1 if n % 50 == 49 else n}@example.com"
            file.write(
                f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:bench-{n}\r\nN:{last};{first};;;\r\nFN:{first} {last}\r\n"
                f"EMAIL;TYPE=INTERNET,HOME:{email}\r\nTEL;TYPE=CELL:+1 202 555 {n % 10000:04d}\r\n"
                f"ADR;TYPE=HOME:;;{n} Main Street;Springfield;IL;62701;USA\r\nCATEGORIES:bench,group{n % 7}\r\n"
                f"NOTE:Contact number {n}\\, generated\r\nX-BENCH:{n}\r\nEND:VCARD\r\n"
            )


async def _with_app(jwt_secret: str, work: Callable[[Any, Any, int], Any]) -> Any:
    from sqlalchemy import select

    from app.core.cache import cache
    from app.core.db import Database
    from app.users.models import User

    settings = _settings(jwt_secret)
    cache.configure(settings)
    database = Database.from_settings(settings)
    try:
        async with database.sessionmaker() as session:
            user_id = await session.scalar(select(User.id).where(User.email == "mover@bench.example"))
        return await work(database, settings, int(user_id or 0))
    finally:
        await cache.close()
        await database.dispose()


def _phase(name: str, jwt_secret: str, path: str) -> tuple[float, int, Any]:
    """One phase in this (fresh) process: seconds, peak resident memory (KiB), and what it answered."""
    started = time.perf_counter()
    result = asyncio.run(_with_app(jwt_secret, PHASES[name](Path(path))))
    return time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, result


def _import(path: Path) -> Callable[[Any, Any, int], Any]:
    async def work(database: Any, settings: Any, user_id: int) -> Any:
        from app.core.db import commit
        from app.interchange import importing
        from app.interchange.schemas import ImportReport

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as file:
                while chunk := file.read(256 * 1024):
                    yield chunk

        async with database.sessionmaker() as session:
            # Committed every CHECKPOINT_EVERY records, as a background job does.
            async def checkpoint(position: int, report: ImportReport) -> None:
                from app.contacts import service as contacts

                await commit(session)
                await contacts.lock_address_book(session, user_id)

            report = await importing.import_stream(
                session,
                user_id,
                chunks(),
                filename=path.name,
                max_record=settings.import_max_record_bytes,
                resume=importing.Resume(checkpoint=checkpoint),
            )
            await commit(session)
        return report.model_dump(exclude={"refused"})

    return work


def _export(export_format: str) -> Callable[[Path], Callable[[Any, Any, int], Any]]:
    def phase(path: Path) -> Callable[[Any, Any, int], Any]:
        async def work(database: Any, settings: Any, user_id: int) -> Any:
            from app.interchange import exporting

            first_byte = None
            started = time.perf_counter()
            size = 0
            with path.open("wb") as file:
                async for chunk in exporting.export_stream(database.sessionmaker, user_id, export_format):  # type: ignore[arg-type]
                    first_byte = first_byte or time.perf_counter() - started
                    size += len(chunk)
                    file.write(chunk)
            return {"bytes": size, "first_chunk_seconds": round(first_byte or 0, 3)}

        return work

    return phase


def _duplicates(path: Path) -> Callable[[Any, Any, int], Any]:
    async def work(database: Any, settings: Any, user_id: int) -> Any:
        from app.interchange import duplicates

        async with database.sessionmaker() as session:
            found = await duplicates.find_duplicates(session, user_id, 10)
        return {"groups": found.total}

    return work


PHASES: dict[str, Callable[[Path], Callable[[Any, Any, int], Any]]] = {
    "import vCard": _import,
    "import vCard again (all unchanged)": _import,
    "export vCard 4.0": _export("vcard"),
    "export Google CSV": _export("csv"),
    "duplicates": _duplicates,
}


async def _prepare(jwt_secret: str) -> None:
    from app.core.db import Database, commit
    from app.users.models import User

    await create_postgres(ADMIN_DSN, DATABASE)
    await migrate(DATABASE_URL, jwt_secret)
    database = Database.from_settings(_settings(jwt_secret))
    async with database.sessionmaker() as session:
        session.add(User(email="mover@bench.example", hashed_password="!", is_verified=True, is_active=True))  # noqa: S106 - no login
        await commit(session)
    await database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--contacts", type=int, default=100_000)
    args = parser.parse_args()
    jwt_secret = secrets.token_urlsafe(32)
    asyncio.run(_prepare(jwt_secret))
    spawn = multiprocessing.get_context("spawn")
    rows = []
    try:
        with tempfile.TemporaryDirectory() as work:
            source = Path(work) / "book.vcf"
            write_vcards(source, args.contacts)
            print(f"{args.contacts} contacts, vCard file {source.stat().st_size / 1e6:.1f} MB")
            for name in PHASES:
                path = source if name.startswith("import") else Path(work) / name.replace(" ", "_")
                with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                    seconds, peak_kib, result = pool.submit(_phase, name, jwt_secret, str(path)).result()
                rate = args.contacts / seconds
                rows.append((name, seconds, rate, peak_kib / 1024, result))
                print(
                    f"{name:38} {seconds:8.1f} s {rate:9.0f} contacts/s  peak RSS {peak_kib / 1024:7.1f} MB  {result}"
                )
    finally:
        asyncio.run(drop_postgres(ADMIN_DSN, DATABASE))


if __name__ == "__main__":
    main()
