"""The Redis backend on one server, a Redis Cluster or a Sentinel-watched master: each cache operation one command,
pipeline or Lua script; no retries, short socket timeouts.

On a Cluster the keys of one operation share a hash slot (`Cache` tags them with the user's id), so each script runs
on one node; the slot map is (re)read in the background when redis-py asks for it, so that no operation's short
timeout cuts it off. A write's tombstones are followed by `WAIT 1 <ms>` on the same connection wherever a failover
could promote a replica (on the Sentinel's master, and on a Cluster slot that has a replica): they count only once a
replica has them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import AskError, MovedError, NoScriptError, RedisClusterException, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from app.core.cache import lua
from app.core.cache.backend import LeaseState, ListBound, ReplicaUnconfirmed
from app.core.cache.topology import Topology, parse
from app.core.config import Settings

# Clients of single cluster nodes (for a tombstone and its WAIT on one connection): connections each.
NODE_POOL_SIZE = 8


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The Sentinel master's pool, waiting for a free connection (as the single server's pool does) instead of
    failing when all are in use: a herd of requests must not look like an outage."""


class Answers:
    """How many replies Redis has sent on a backend's connections (a handshake's and an error reply included): the
    operation deadline's sign that Redis is alive while an operation waits (see `deadline.py`)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


def _counting(base: type[AbstractConnection], answers: Answers) -> type[AbstractConnection]:
    """`base` (the connection class redis-py would use) counting every reply it reads into `answers`."""

    class CountingConnection(base):  # type: ignore[valid-type,misc]
        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            try:
                response = await super().read_response(*args, **kwargs)
            except ResponseError:
                answers.count += 1
                raise
            answers.count += 1
            return response

    return CountingConnection


class RedisBackend:
    name = "redis"

    def __init__(self, url: str, settings: Settings) -> None:
        self.topology: Topology = parse(url)
        # What /health reports: redis, redis-cluster or redis-sentinel.
        self.name = "redis" if self.topology.kind == "single" else f"redis-{self.topology.kind}"
        # redis-py's own timeouts are only the backstop: the guarded call's lag-aware deadline is the real one.
        timeout = max(settings.cache_op_timeout, settings.cache_op_timeout_cap)
        self._timeout = timeout
        # No retries: redis-py's default (3 retries with backoff) costs seconds per request while Redis is down.
        self._options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        self._pool_size = settings.cache_pool_size
        # Replies Redis sent on this backend's connections. None on a Cluster: one node's replies say nothing of
        # another's, so there an operation's deadline goes by the loop's lag alone.
        self._answers = Answers()
        self.answers: Callable[[], int] | None = None if self.topology.kind == "cluster" else self._answers
        self._sentinel: Sentinel | None = None
        self._pool: BlockingConnectionPool | None = None
        self._node_clients: dict[tuple[str, int], Redis] = {}
        self._init_task: asyncio.Task[Any] | None = None
        self._cluster = self.topology.kind == "cluster"
        # A cluster node's pool fails (rather than waits) when it is exhausted: bound the operations instead.
        self._gate = asyncio.Semaphore(self._pool_size)
        self.client: Any = self._connect()
        self._get_or_lease = self.client.register_script(lua.GET_OR_LEASE)
        self._fill = self.client.register_script(lua.FILL)
        self._release = self.client.register_script(lua.RELEASE)
        self._store = self.client.register_script(lua.STORE)
        self._tombstone = self.client.register_script(lua.TOMBSTONE)

    def _connect(self) -> Redis | RedisCluster:
        topology, options = self.topology, self._options
        if topology.kind == "cluster":
            return RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in topology.nodes],
                require_full_coverage=False,
                max_connections=self._pool_size,
                **topology.auth(),
                **options,
            )
        if topology.kind == "sentinel":
            asked = {k: v for k, v in options.items() if k != "health_check_interval"}
            self._sentinel = Sentinel(list(topology.nodes), sentinel_kwargs=asked)  # type: ignore[no-untyped-call]
            return cast(
                Redis,
                self._sentinel.master_for(
                    topology.service,
                    connection_pool_class=BlockingSentinelPool,
                    connection_class=_counting(SentinelManagedConnection, self._answers),
                    max_connections=self._pool_size,
                    timeout=self._timeout,
                    db=topology.db,
                    **topology.auth(),
                    **options,
                ),
            )
        base = parse_url(topology.url).get("connection_class", Connection)
        self._pool = BlockingConnectionPool.from_url(
            topology.url,
            max_connections=self._pool_size,
            timeout=self._timeout,
            connection_class=_counting(base, self._answers),
            **options,
        )
        return Redis(connection_pool=self._pool)

    @contextlib.asynccontextmanager
    async def _cluster_call(self) -> AsyncIterator[None]:
        """A Cluster operation: within the connection bound, on a current slot map, cluster errors as outages."""
        async with self._gate:
            try:
                # redis-py's flag: the slot map must be read again (first use, or a node failed). Reading it (and
                # COMMAND) takes tens of ms: it runs as a task of its own that no operation's timeout cancels.
                if self.client._initialize:
                    task = self._init_task
                    if task is None or task.done():
                        task = self._init_task = asyncio.get_running_loop().create_task(self.client.initialize())
                        task.add_done_callback(lambda done: done.cancelled() or done.exception())
                    await asyncio.shield(task)
                yield
            except RedisClusterException as exc:  # no node answers, a slot is not covered: Redis is unavailable
                raise RedisConnectionError(str(exc)) from exc

    # -- the Backend protocol ----------------------------------------------------------------------------------

    async def get(self, keys: list[tuple[str, str | None]]) -> list[bytes | None]:
        if self._cluster:
            async with self._cluster_call():
                return await self._get(keys)
        return await self._get(keys)

    async def _get(self, keys: list[tuple[str, str | None]]) -> list[bytes | None]:
        if len(keys) == 1:
            key, hash_field = keys[0]
            value = await (self.client.get(key) if hash_field is None else self.client.hget(key, hash_field))
            return [cast(bytes | None, value)]
        async with self.client.pipeline(transaction=False) as pipe:
            for key, hash_field in keys:
                if hash_field is None:
                    pipe.get(key)
                else:
                    pipe.hget(key, hash_field)
            return list(await pipe.execute())

    async def _script(self, script: Any, key: str, args: list[Any]) -> Any:
        if self._cluster:
            async with self._cluster_call():
                return await script(keys=[key], args=args)
        return await script(keys=[key], args=args)

    async def get_or_lease(
        self, key: str, hash_field: str | None, token: str, lease_ms: int, key_ttl: int, bound: ListBound | None = None
    ) -> tuple[LeaseState, bytes | None]:
        fields, size = bound or (0, 0)
        result = await self._script(self._get_or_lease, key, [hash_field or "", token, lease_ms, key_ttl, fields, size])
        state = LeaseState(int(result[0]))
        return state, (result[1] if state is LeaseState.hit else None)

    async def fill(
        self, key: str, hash_field: str | None, token: str, value: bytes, ttl: int, bound: ListBound | None = None
    ) -> bool:
        size = bound.bytes if bound else 0
        return bool(await self._script(self._fill, key, [hash_field or "", token, value, ttl, size]))

    async def release(self, key: str, hash_field: str | None, token: str) -> bool:
        return bool(await self._script(self._release, key, [hash_field or "", token]))

    async def store(self, key: str, value: bytes, ttl: int) -> bool:
        return bool(await self._script(self._store, key, [value, ttl]))

    async def tombstone(self, keys: list[tuple[str, bool]], ttl_ms: int, confirm_ms: int = 0) -> None:
        if not self._cluster:
            await self._tombstone_slot(keys, ttl_ms, confirm_ms)
            return
        async with self._cluster_call():
            # One script per hash slot (a write's keys share one: `Cache` tags them with the user's id).
            slots: dict[int, list[tuple[str, bool]]] = {}
            for key, is_hash in keys:
                slots.setdefault(self.client.keyslot(key), []).append((key, is_hash))
            await asyncio.gather(*(self._tombstone_slot(group, ttl_ms, confirm_ms) for group in slots.values()))

    async def _tombstone_slot(self, keys: list[tuple[str, bool]], ttl_ms: int, confirm_ms: int) -> None:
        names = [key for key, _ in keys]
        args = [ttl_ms, *("1" if is_hash else "0" for _, is_hash in keys)]
        if confirm_ms and self.topology.kind == "sentinel":
            await self._tombstone_and_wait(self.client, names, args, confirm_ms)
        elif confirm_ms and self._cluster and self._has_replica(names[0]):
            await self._tombstone_on_node(names, args, confirm_ms)
        else:
            await self._tombstone(keys=names, args=args)

    def _has_replica(self, key: str) -> bool:
        return len(self.client.nodes_manager.slots_cache.get(self.client.keyslot(key), ())) > 1

    async def _tombstone_on_node(self, names: list[str], args: list[Any], confirm_ms: int) -> None:
        """The tombstone and its WAIT on one connection to the slot's master (the cluster client may use two)."""
        node = self.client.get_node_from_key(names[0])
        address, asking = (node.host, node.port), False
        for _ in range(3):
            try:
                await self._tombstone_and_wait(self._node_client(address), names, args, confirm_ms, asking)
                return
            except AskError as redirect:  # MOVED (a subclass) or ASK: the slot moved or is being migrated
                address, asking = (redirect.host, int(redirect.port)), not isinstance(redirect, MovedError)
        raise RedisConnectionError(f"the slot of {names[0]} kept moving")

    async def _tombstone_and_wait(
        self, client: Redis, names: list[str], args: list[Any], confirm_ms: int, asking: bool = False
    ) -> None:
        """Tombstones, then `WAIT 1` on the same connection: the number of replicas that have them."""
        for _ in range(2):
            async with client.pipeline(transaction=False) as pipe:
                if asking:
                    pipe.execute_command("ASKING")
                pipe.evalsha(self._tombstone.sha, len(names), *names, *args)
                pipe.execute_command("WAIT", 1, confirm_ms)
                try:
                    replies = await pipe.execute()
                except NoScriptError:
                    await client.script_load(lua.TOMBSTONE)
                    continue
            if int(replies[-1]) < 1:
                raise ReplicaUnconfirmed(f"no replica confirmed the tombstones of {names} within {confirm_ms} ms")
            return
        raise ReplicaUnconfirmed("the tombstone script could not be loaded")

    def _node_client(self, address: tuple[str, int]) -> Redis:
        client = self._node_clients.get(address)
        if client is None:
            host, port = address
            pool = BlockingConnectionPool(
                host=host,
                port=port,
                max_connections=NODE_POOL_SIZE,
                timeout=self._timeout,
                **self.topology.auth(),
                **self._options,
            )
            client = self._node_clients[address] = Redis(connection_pool=pool)
        return client

    async def delete(self, keys: list[str]) -> None:
        if self._cluster:
            async with self._cluster_call():
                await self._delete(keys)
        else:
            await self._delete(keys)

    async def _delete(self, keys: list[str]) -> None:
        # One DEL per key in one pipeline: a multi-key DEL would span hash slots on Redis Cluster.
        if len(keys) == 1:
            await self.client.delete(keys[0])
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.delete(key)
            await pipe.execute()

    async def ping(self) -> bool:
        if self._cluster:
            async with self._cluster_call():
                return bool(await self.client.ping(target_nodes=RedisCluster.PRIMARIES))
        return bool(await self.client.ping())

    async def close(self) -> None:
        if self._init_task is not None:
            self._init_task.cancel()
        for client in self._node_clients.values():
            await client.aclose(close_connection_pool=True)
        await self.client.aclose()
        if self._pool is not None:
            await self._pool.disconnect()
        if self._sentinel is not None:
            await self.client.connection_pool.disconnect()
            await self._sentinel.aclose()
