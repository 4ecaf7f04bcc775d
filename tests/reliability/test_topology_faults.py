"""The service on a Redis Cluster and behind Sentinels, under the mixed load of `workload.py`, while the topology
fails over or moves data: a cluster master killed and its replica promoted, a hash slot migrated (CLUSTER SETSLOT,
MIGRATE) back and forth, a Sentinel failover after the master is killed. Every read is checked against the writes
already acknowledged; the runs record requests, failed requests, stale reads and how long the cache took to serve
hits again.

The cluster (3 masters, 3 replicas) and the Sentinel group (a master, a replica, 3 sentinels) are the session's own
(tests/topologies.py); each run leaves them healthy again (a killed node restarted, as a replica).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import ApiServer
from tests.reliability.secrets_scan import SecretScanner
from tests.reliability.topology_load import SMALL_POOL, FaultRun, HostsWorkload, migrated_database, run_fault
from tests.topologies import ClusterServers, SentinelGroup, wait_until

pytestmark = pytest.mark.postgres_only

CLIENTS = 20
USERS = 6
FAILOVER_TIMEOUT = 20.0


# Each run has a quick version (the default `uv run pytest`) and a long one (`-m slow`).
LENGTHS = pytest.mark.parametrize("length", ["quick", pytest.param("long", marks=pytest.mark.slow)])


@pytest.fixture(scope="module")
def cluster_server(postgres_admin_url: str, redis_cluster: ClusterServers) -> Iterator[ApiServer]:
    """The service on the session's cluster, on a database of its own (one database, one Redis)."""
    redis_cluster.wait_healthy()
    env = {**SMALL_POOL, "REDIS_CLUSTER_NODES": ",".join(redis_cluster.startup_nodes)}
    with migrated_database(postgres_admin_url, "cluster") as database_url:
        server = ApiServer("cluster", database_url, None, migrate=False, extra_env=env)
        try:
            yield server.start()
        finally:
            server.stop()


@pytest.fixture(scope="module")
def sentinel_server(postgres_admin_url: str, redis_sentinel: SentinelGroup) -> Iterator[ApiServer]:
    redis_sentinel.wait_healthy()
    env = {
        **SMALL_POOL,
        "REDIS_SENTINELS": ",".join(redis_sentinel.sentinel_addresses),
        "REDIS_SENTINEL_MASTER": redis_sentinel.service,
    }
    with migrated_database(postgres_admin_url, "sentinel") as database_url:
        server = ApiServer("sentinel", database_url, None, migrate=False, extra_env=env)
        try:
            yield server.start()
        finally:
            server.stop()


@pytest.fixture
async def metrics_of(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    opened: list[httpx.AsyncClient] = []

    def open_for(server: ApiServer) -> list[httpx.AsyncClient]:
        http = httpx.AsyncClient(base_url=server.base_url, timeout=10)
        opened.append(http)
        return [http]

    yield open_for
    for http in opened:
        await http.aclose()


def record(figures: Any, label: str, run: FaultRun, notes: str) -> None:
    back = run.since_fault("back") or 0.0
    hits = run.since_fault("hits")
    hits_back = f"{hits - back:.1f} s" if hits is not None else "never"
    figures(
        label,
        errors=len(run.failed),
        stale_reads=len(run.result.stale),
        notes=f"{notes}; cache hits back {hits_back} after; cache: {run.counters}",
        **run.result.figures(),
    )


def assert_clean(run: FaultRun) -> None:
    assert run.failed == [], [(c.kind, c.status, c.error, c.body[:200]) for c in run.failed[:10]]
    assert run.result.stale == [], [(s.kind, s.contact, s.detail) for s in run.result.stale[:10]]
    assert run.since_fault("hits") is not None, "the cache never served hits again"


def wait_master(port: int) -> None:
    import redis

    wait_until(
        lambda: redis.Redis(port=port, socket_timeout=1).info("replication")["role"] == "master",
        FAILOVER_TIMEOUT,
        f"the promotion of 127.0.0.1:{port}",
    )


# -- Redis Cluster ------------------------------------------------------------------------------------------------


@LENGTHS
async def test_cluster_master_killed_and_replica_promoted_under_load(
    cluster_server: ApiServer,
    redis_cluster: ClusterServers,
    metrics_of: Any,
    secret_scanner: SecretScanner,
    figures: Any,
    request: pytest.FixtureRequest,
    length: str,
) -> None:
    rounds = 3 if length == "long" else 1
    failovers: list[float] = []

    async def kill_masters(marks: dict[str, float]) -> None:
        for index in range(rounds):
            if index:
                await asyncio.sleep(5)
            master = redis_cluster.masters()[index % 3]
            replica = redis_cluster.replica_of(master)
            killed_at = time.monotonic()
            master.kill()
            await asyncio.to_thread(wait_master, replica.port)
            failovers.append(time.monotonic() - killed_at)
            marks["back"] = time.monotonic()
            if index < rounds - 1:  # the last one is restarted after the run: its recovery is measured first
                redis_cluster.restart(master)
                await asyncio.to_thread(redis_cluster.wait_healthy)

    workload = HostsWorkload([cluster_server.base_url], clients=CLIENTS, users=USERS, scanner=secret_scanner)
    try:
        async with workload:
            await workload.setup()
            run = await run_fault(workload, metrics_of(cluster_server), kill_masters)
    finally:
        for node in redis_cluster.nodes:
            redis_cluster.restart(node)
        await asyncio.to_thread(redis_cluster.wait_healthy)

    record(
        figures,
        f"Redis Cluster (3 masters, 3 replicas): a master killed and its replica promoted, x{rounds}",
        run,
        f"{CLIENTS} clients; promoted in {', '.join(f'{s:.1f}' for s in failovers)} s",
    )
    assert_clean(run)


@LENGTHS
async def test_cluster_slot_migrated_under_load(
    cluster_server: ApiServer,
    redis_cluster: ClusterServers,
    metrics_of: Any,
    secret_scanner: SecretScanner,
    figures: Any,
    request: pytest.FixtureRequest,
    length: str,
) -> None:
    workload = HostsWorkload([cluster_server.base_url], clients=CLIENTS, users=USERS, scanner=secret_scanner)
    moves: list[str] = []

    async def migrate(marks: dict[str, float]) -> None:
        # The slots of the busiest keys: each user's keys share one (their id is the hash tag).
        users = workload.accounts if length == "long" else workload.accounts[:2]
        slots = sorted({redis_cluster.slot(f"{{{account.id}}}") for account in users})
        for slot in slots:
            home = redis_cluster.master_of_slot(slot)
            away = next(master for master in redis_cluster.masters() if master is not home)
            for target in (away, home):  # there and back, under load
                began = time.monotonic()
                keys = await asyncio.to_thread(redis_cluster.migrate_slot, slot, target)
                moves.append(f"slot {slot}: {keys} keys in {time.monotonic() - began:.2f} s")
                await asyncio.sleep(0.5)
        marks["back"] = time.monotonic()

    async with workload:
        await workload.setup()
        run = await run_fault(workload, metrics_of(cluster_server), migrate)
    await asyncio.to_thread(redis_cluster.wait_healthy)

    record(
        figures,
        f"Redis Cluster: {len(moves) // 2} hash slot(s) migrated there and back (SETSLOT, MIGRATE) under load",
        run,
        f"{CLIENTS} clients; " + "; ".join(moves),
    )
    assert_clean(run)


# -- Sentinel -----------------------------------------------------------------------------------------------------


@LENGTHS
async def test_sentinel_failover_under_load(
    sentinel_server: ApiServer,
    redis_sentinel: SentinelGroup,
    metrics_of: Any,
    secret_scanner: SecretScanner,
    figures: Any,
    request: pytest.FixtureRequest,
    length: str,
) -> None:
    rounds = 3 if length == "long" else 1
    failovers: list[float] = []

    async def kill_master(marks: dict[str, float]) -> None:
        for index in range(rounds):
            if index:
                await asyncio.sleep(5)
            master, replica = redis_sentinel.master(), redis_sentinel.replica()
            killed_at = time.monotonic()
            master.kill()
            await asyncio.to_thread(wait_master, replica.port)
            failovers.append(time.monotonic() - killed_at)
            marks["back"] = time.monotonic()
            if index < rounds - 1:  # the last one is restarted after the run: its recovery is measured first
                redis_sentinel.restart(master)
                await asyncio.to_thread(redis_sentinel.wait_healthy)

    workload = HostsWorkload([sentinel_server.base_url], clients=CLIENTS, users=USERS, scanner=secret_scanner)
    try:
        async with workload:
            await workload.setup()
            run = await run_fault(workload, metrics_of(sentinel_server), kill_master)
    finally:
        for server in redis_sentinel.servers:
            redis_sentinel.restart(server)
        await asyncio.to_thread(redis_sentinel.wait_healthy)

    record(
        figures,
        f"Sentinel (a master, a replica, 3 sentinels): the master killed, failover, x{rounds}",
        run,
        f"{CLIENTS} clients; replica promoted in {', '.join(f'{s:.1f}' for s in failovers)} s",
    )
    assert_clean(run)
