"""The load and fault machinery of the topology runs: the workload over several hosts, a fault under load with its
figures, and a way to kill a server's workers (SIGKILL) the way a crash would."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import pool
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.migrations import upgrade_to_head
from tests.reliability.conftest import ApiServer
from tests.reliability.workload import (
    Call,
    Workload,
    WorkloadResult,
    cache_counters,
    counters_delta,
    metric_total,
)
from tests.servers import postgres_admin_execute

HITS = "contacts_api_cache_requests_total"
# The runs' servers come in twos and threes beside the suite's own: smaller pools keep them all within PostgreSQL's
# 100 connections, which other work on the machine shares.
SMALL_POOL = {"DATABASE_POOL_SIZE": "4", "DATABASE_MAX_OVERFLOW": "2"}
WRITES = ("POST", "PUT", "PATCH", "DELETE")


class HostsWorkload(Workload):
    """The workload of `workload.py` over several hosts (one database, one Redis). Each user's clients are spread
    over the hosts (client i, of user i % users, talks to host (i // users) % n), so that reads on one host check
    writes made on another; or, with `writes_to`, every write goes to that host and every read to the others."""

    def __init__(self, base_urls: list[str], *, writes_to: int | None = None, **options: Any) -> None:
        super().__init__(base_urls[0], **options)
        self.base_urls = base_urls
        self.writes_to = writes_to
        self.clients_by_host: list[httpx.AsyncClient] = []
        self._seeding = False

    async def setup(self) -> None:
        """Register and seed through the last host: what is under test is the run, not the seeding (a `strict`
        writer refuses writes whenever its tombstones cannot be placed, a freshly started one included)."""
        self._seeding = True
        try:
            await super().setup()
        finally:
            self._seeding = False

    async def __aenter__(self) -> HostsWorkload:
        for url in self.base_urls:
            self.base_url = url
            self.clients_by_host.append(self._client())
        self.base_url = self.base_urls[0]
        self.http = self.clients_by_host[0]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for http in self.clients_by_host:
            await http.aclose()

    async def _request(self, client: Any, kind: str, method: str, url: str, **kwargs: Any) -> tuple[Call, Any]:
        hosts = self.clients_by_host
        if self._seeding:
            self.http = hosts[-1]
        elif self.writes_to is None:
            self.http = hosts[(client.index // self.user_count) % len(hosts)]
        elif method in WRITES:
            self.http = hosts[self.writes_to]
        else:
            readers = [http for index, http in enumerate(hosts) if index != self.writes_to]
            self.http = readers[(client.index // self.user_count) % len(readers)]
        # The base class reads `self.http` before its first await: each request keeps the host chosen here.
        return await super()._request(client, kind, method, url, **kwargs)


def failed(calls: list[Call]) -> list[Call]:
    """Requests that failed: no answer, or an error status (a 404 for another client's deleted contact is not)."""
    return [
        c for c in calls if c.status is None or (c.status >= 400 and not (c.status == 404 and c.kind == "get_other"))
    ]


@dataclass
class FaultRun:
    """A workload run with a fault in its middle, and when things happened (monotonic seconds)."""

    result: WorkloadResult
    marks: dict[str, float] = field(default_factory=dict)
    counters: str = ""

    def since_fault(self, mark: str) -> float | None:
        return self.marks[mark] - self.marks["fault"] if mark in self.marks else None

    @property
    def failed(self) -> list[Call]:
        return failed(self.result.calls)

    def stale_window(self) -> float:
        """The longest time for which a read still showed a value older than an acknowledged write."""
        return max((s.read_started - s.missed_ack for s in self.result.stale if s.missed_ack), default=0.0)


Fault = Callable[[dict[str, float]], Awaitable[None]]


async def run_fault(
    workload: Workload,
    metrics: list[httpx.AsyncClient],
    fault: Fault,
    *,
    warm: float = 1.5,
    hits_within: float = 15.0,
    steady: float = 1.0,
) -> FaultRun:
    """Warm the cache, run `fault` (which sets marks of its own; "back" when the fault is over), then wait for cache
    hits to grow again ("hits") and run `steady` seconds more."""
    marks: dict[str, float] = {}

    async def total_hits() -> float:
        return sum([await metric_total(http, HITS, result="hit") for http in metrics])

    async def scenario() -> None:
        await asyncio.sleep(warm)
        marks["fault"] = time.monotonic()
        await fault(marks)
        marks.setdefault("back", time.monotonic())
        hits = await total_hits()
        while time.monotonic() - marks["back"] < hits_within:
            await asyncio.sleep(0.1)
            if await total_hits() > hits:
                marks["hits"] = time.monotonic()
                break
        await asyncio.sleep(steady)

    before = [await cache_counters(http) for http in metrics]
    result = await workload.run(until=scenario())
    after = [await cache_counters(http) for http in metrics]
    counters = "; ".join(counters_delta(b, a) for b, a in zip(before, after, strict=True))
    return FaultRun(result, marks, counters)


def worker_pids(server: ApiServer) -> list[int]:
    """The uvicorn workers of a `contacts-api serve` process (its children that run the app)."""
    assert server.process is not None
    parent = str(server.process.pid)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == parent and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return pids


def kill_workers(server: ApiServer) -> list[int]:
    """SIGKILL every worker of `server`, as a crash would (uvicorn's supervisor starts new ones)."""
    pids = worker_pids(server)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def wait_workers_replaced(server: ApiServer, killed: list[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = worker_pids(server)
        if len(alive) >= server.workers and not set(alive) & set(killed):
            try:
                if all(httpx.get(f"{server.base_url}/health", timeout=2).status_code == 200 for _ in range(4)):
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.name}'s workers were not replaced within {timeout} s")


_TEMPLATES: dict[str, str] = {}


def _migrated_template(admin_url: str) -> str:
    """A database migrated to head, once per session: the runs' databases are copies of it (CREATE DATABASE ...
    TEMPLATE takes a fraction of a second; migrating takes seconds, tens on a busy machine)."""
    if admin_url in _TEMPLATES:
        return _TEMPLATES[admin_url]
    name = f"contacts_rel_template_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(postgres_admin_execute(admin_url, f'CREATE DATABASE "{name}"'))

    async def migrate() -> None:
        url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=name)
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(migrate())
    _TEMPLATES[admin_url] = name
    atexit.register(_drop_at_exit, admin_url, name)
    return name


def _drop_at_exit(admin_url: str, name: str) -> None:
    """Drop a template at the end of the session; a PostgreSQL the session started itself (embedded) may already
    be gone, and its data with it: nothing left to drop then."""
    with contextlib.suppress(OSError):
        asyncio.run(postgres_admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}"'))


@contextlib.contextmanager
def migrated_database(admin_url: str, label: str) -> Iterator[str]:
    """A migrated database of a group of servers' own (their SQLAlchemy URL), dropped on exit. Servers that share a
    database must share one Redis: each replays the invalidations recorded in the database on its own Redis, so a
    server on another Redis would take (and waste) the rows of the others."""
    template = _migrated_template(admin_url)
    name = f"contacts_rel_{label}_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(postgres_admin_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield (
            make_url(admin_url)
            .set(drivername="postgresql+asyncpg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        asyncio.run(postgres_admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
