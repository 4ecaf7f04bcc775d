"""Two "hosts" on one PostgreSQL and one Redis: two `contacts-api serve` processes of 2 workers each, on different
ports. Host A reaches Redis through a proxy the tests can cut (Redis unreachable from A only); host B directly.

* Mixed load over both hosts while Redis is killed and restarted: no failed request, no stale read across hosts.
* The README's "Limit" case under load: every write goes through A, every read through B, and A is cut off from
  Redis. `available` (A) commits the writes and B may serve the old value until a worker replays the
  invalidations A recorded in the database (the measured window); `strict` (A') refuses them: 0 stale reads.
* A's workers SIGKILLed while Redis is unreachable from them, with invalidations still owed: B serves the new value
  once the recorded invalidation is replayed (within CACHE_REPLAY_INTERVAL), not after the keys' TTL.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.reliability.conftest import API, ApiServer, register_account, start_redis
from tests.reliability.proxy import TcpProxy
from tests.reliability.secrets_scan import SecretScanner
from tests.reliability.topology_load import (
    SMALL_POOL,
    HostsWorkload,
    kill_workers,
    migrated_database,
    run_fault,
    wait_workers_replaced,
)
from tests.reliability.workload import percentile
from tests.servers import RedisProcess

pytestmark = pytest.mark.postgres_only

CLIENTS = 24
USERS = 6
REPLAY_INTERVAL = 1.0  # the servers' CACHE_REPLAY_INTERVAL (the default)
# A stale read under `available` ends once a worker of B replays the invalidation: within 1.5 intervals (each worker
# waits 0.5 to 1.5 of them), plus a request's time.
STALE_WINDOW_BOUND = 1.5 * REPLAY_INTERVAL + 1.5


# Each run has a quick version (the default `uv run pytest`) and a long one (`-m slow`).
LENGTHS = pytest.mark.parametrize("length", ["quick", pytest.param("long", marks=pytest.mark.slow)])


@dataclass
class Hosts:
    database_url: str
    redis: RedisProcess
    proxy: TcpProxy
    a: ApiServer
    b: ApiServer

    @property
    def urls(self) -> list[str]:
        return [self.a.base_url, self.b.base_url]


@pytest.fixture(scope="module")
def hosts(postgres_admin_url: str) -> Iterator[Hosts]:
    """Hosts A and B on a database and a Redis of theirs."""
    with migrated_database(postgres_admin_url, "hosts") as database_url:
        redis = start_redis()
        proxy = TcpProxy(redis.port).start()
        a = ApiServer("host-a", database_url, None, migrate=False, extra_env={**SMALL_POOL, "REDIS_URL": proxy.url})
        b = ApiServer("host-b", database_url, redis, migrate=False, extra_env=SMALL_POOL)
        try:
            a.start()
            b.start()
            yield Hosts(database_url, redis, proxy, a, b)
        finally:
            a.stop()
            b.stop()
            proxy.close()
            redis.close()


@pytest.fixture
def strict_host(hosts: Hosts) -> Iterator[ApiServer]:
    """Host A' : A's view of Redis (through the proxy) with CACHE_WRITE_POLICY=strict."""
    server = ApiServer(
        "host-a-strict",
        hosts.database_url,
        None,
        migrate=False,
        extra_env={**SMALL_POOL, "REDIS_URL": hosts.proxy.url, "CACHE_WRITE_POLICY": "strict"},
    )
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
async def metrics(hosts: Hosts) -> AsyncIterator[list[httpx.AsyncClient]]:
    clients = [httpx.AsyncClient(base_url=url, timeout=10) for url in hosts.urls]
    yield clients
    for http in clients:
        await http.aclose()


# -- mixed load over both hosts, Redis killed -----------------------------------------------------------------------


@LENGTHS
async def test_two_hosts_under_mixed_load_and_redis_faults(
    hosts: Hosts,
    metrics: list[httpx.AsyncClient],
    secret_scanner: SecretScanner,
    figures: Any,
    request: pytest.FixtureRequest,
    length: str,
) -> None:
    outages = [(1.5, "killed")] if length == "quick" else [(5, "killed"), (3, "paused"), (10, "killed")]

    async def faults(marks: dict[str, float]) -> None:
        for index, (seconds, kind) in enumerate(outages):
            if index:
                await asyncio.sleep(4)
            marks[f"{kind} #{index + 1}"] = time.monotonic()
            if kind == "killed":
                hosts.redis.kill()
                await asyncio.sleep(seconds)
                await asyncio.to_thread(hosts.redis.start)
            else:
                admin = Redis.from_url(hosts.redis.url)
                await admin.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")  # type: ignore[no-untyped-call]
                await admin.aclose()
                await asyncio.sleep(seconds)
        marks["back"] = time.monotonic()

    try:
        async with HostsWorkload(hosts.urls, clients=CLIENTS, users=USERS, scanner=secret_scanner) as workload:
            await workload.setup()
            run = await run_fault(workload, metrics, faults)
    finally:
        if not hosts.redis.alive:
            await asyncio.to_thread(hosts.redis.start)

    recovered = run.since_fault("hits")
    back = run.since_fault("back") or 0.0
    hits_back = f"{recovered - back:.1f} s" if recovered is not None else "never"
    figures(
        "two hosts (2 x 2 workers, one Redis, one PostgreSQL): mixed load, Redis "
        + ", ".join(f"{kind} {seconds:g} s" for seconds, kind in outages),
        errors=len(run.failed),
        stale_reads=len(run.result.stale),
        notes=f"{CLIENTS} clients over both hosts; cache hits back "
        f"{hits_back} after Redis; "
        f"cache (A; B): {run.counters}",
        **run.result.figures(),
    )
    assert run.failed == [], [(c.kind, c.status, c.error, c.body[:200]) for c in run.failed[:10]]
    t0 = run.marks["fault"]
    timeline = {name: round(at - t0, 2) for name, at in run.marks.items()}
    assert run.result.stale == [], (
        [
            (s.kind, s.contact, s.detail, round(s.missed_ack - t0, 2), round(s.read_started - t0, 2))
            for s in run.result.stale[:10]
        ],
        timeline,
    )
    assert recovered is not None


# -- the README's "Limit": the writer's host cut off from Redis ----------------------------------------------------


@pytest.mark.parametrize("policy", ["available", "strict"])
@LENGTHS
async def test_writer_host_cut_off_from_redis_while_another_host_reads(
    hosts: Hosts,
    metrics: list[httpx.AsyncClient],
    secret_scanner: SecretScanner,
    figures: Any,
    request: pytest.FixtureRequest,
    length: str,
    policy: str,
) -> None:
    writer = hosts.a if policy == "available" else request.getfixturevalue("strict_host")
    cut_seconds = 10.0 if length == "long" else 2.5

    async def cut(marks: dict[str, float]) -> None:
        hosts.proxy.cut()
        try:
            await asyncio.sleep(cut_seconds)
        finally:
            hosts.proxy.restore()
        marks["back"] = time.monotonic()

    urls = [writer.base_url, hosts.b.base_url]
    try:
        async with (
            HostsWorkload(urls, writes_to=0, clients=CLIENTS, users=USERS, scanner=secret_scanner) as workload,
            httpx.AsyncClient(base_url=writer.base_url, timeout=10) as writer_metrics,
        ):
            await workload.setup()
            run = await run_fault(workload, [writer_metrics, metrics[1]], cut)
    finally:
        hosts.proxy.restore()

    during = run.result.window(run.marks["fault"], run.marks["back"])
    writes = [c for c in during if c.kind in ("create", "put", "patch", "delete")]
    refused = [c for c in run.failed if c.status == 503 and b"CacheWriteRefused" in c.body]
    other_failures = [c for c in run.failed if c not in refused]
    window = run.stale_window()
    figures(
        f"writer host cut off from Redis {cut_seconds:g} s, reads on the other host, CACHE_WRITE_POLICY={policy}",
        errors=len(run.failed),
        stale_reads=len(run.result.stale),
        notes=f"{len(writes)} writes during the cut, {len(refused)} refused (503 CacheWriteRefused, until the "
        "writer's breaker closed again); "
        f"longest stale window {window:.2f} s (replays every {REPLAY_INTERVAL:g} s); cache (A; B): {run.counters}"
        + "".join(f"; failed: {c.kind} {c.status} {c.error or c.body[:80]!r}" for c in other_failures[:3]),
        **run.result.figures(),
    )
    assert other_failures == [], [(c.kind, c.status, c.error, c.body[:200]) for c in other_failures[:10]]
    if policy == "strict":
        assert run.result.stale == [], [(s.kind, s.contact, s.detail) for s in run.result.stale[:10]]
        assert refused, "no write was refused while the writer could not reach Redis"
    else:
        assert refused == []
        assert window <= STALE_WINDOW_BOUND, [(s.kind, s.detail) for s in run.result.stale[:10]]


# -- a worker killed while Redis is unreachable from it ----------------------------------------------------------


async def test_workers_killed_while_redis_is_unreachable_leave_no_value_older_than_a_replay(
    hosts: Hosts, figures: Any
) -> None:
    async with (
        httpx.AsyncClient(base_url=hosts.a.base_url, timeout=15) as a,
        httpx.AsyncClient(base_url=hosts.b.base_url, timeout=15) as b,
    ):
        account = await register_account(b, f"killed-{secrets.token_hex(3)}@example.com")
        created = await b.post(f"{API}/contacts", json={"first_name": "Before"}, headers=account.headers)
        assert created.status_code == 201, created.text
        url = f"{API}/contacts/{created.json()['id']}"
        for _ in range(2):
            assert (await b.get(url, headers=account.headers)).json()["first_name"] == "Before"  # cached

        hosts.proxy.cut()
        try:
            write = await a.patch(url, json={"first_name": "After"}, headers=account.headers)
            acknowledged = time.monotonic()
            killed = kill_workers(hosts.a)  # with the deletion they owe Redis in their memory
            reads: list[tuple[float, str]] = []
            while time.monotonic() - acknowledged < 15:
                started = time.monotonic()
                response = await b.get(url, headers=account.headers)
                reads.append((started - acknowledged, response.json()["first_name"]))
                if reads[-1][1] == "After":
                    break
                await asyncio.sleep(0.05)
        finally:
            hosts.proxy.restore()
        await asyncio.to_thread(wait_workers_replaced, hosts.a, killed)

    stale = [at for at, name in reads if name != "After"]
    fresh_after = next((at for at, name in reads if name == "After"), None)
    figures(
        "host A's workers SIGKILLed while Redis is unreachable from them, host B reading",
        requests=len(reads) + 1,
        errors=0 if write.status_code == 200 else 1,
        stale_reads=len(stale),
        notes=f"{len(killed)} workers killed right after an acknowledged write; B fresh "
        f"{f'{fresh_after:.2f} s' if fresh_after is not None else 'never (15 s)'} after the acknowledgement "
        f"(replays every {REPLAY_INTERVAL:g} s; without them: the key's TTL, 30 min)",
        p50_ms=percentile([at * 1000 for at in stale], 50) if stale else None,
    )
    assert write.status_code == 200, write.text
    assert len(killed) == hosts.a.workers
    assert fresh_after is not None, f"host B still served the old value 15 s after the write: {reads[-3:]}"
    assert fresh_after <= STALE_WINDOW_BOUND
    # And the value is the new one from then on.
    async with httpx.AsyncClient(base_url=hosts.b.base_url, timeout=15) as b:
        assert json.loads((await b.get(url, headers=account.headers)).content)["first_name"] == "After"
