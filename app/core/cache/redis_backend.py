"""The Redis backend: each cache operation one command, pipeline or Lua script; no retries, short socket timeouts."""

from __future__ import annotations

from typing import cast

from app.core.cache import lua
from app.core.cache.backend import LeaseState, ListBound
from app.core.config import Settings


class RedisBackend:
    name = "redis"

    def __init__(self, url: str, settings: Settings) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # redis-py's own timeouts are only the backstop: the guarded call's lag-aware deadline is the real one.
        timeout = max(settings.cache_op_timeout, settings.cache_op_timeout_cap)
        # No retries: redis-py's default (3 retries with backoff) costs seconds per request while Redis is down.
        self._pool = BlockingConnectionPool.from_url(
            url,
            max_connections=settings.cache_pool_size,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self.client = Redis(connection_pool=self._pool)
        self._get_or_lease = self.client.register_script(lua.GET_OR_LEASE)
        self._fill = self.client.register_script(lua.FILL)
        self._release = self.client.register_script(lua.RELEASE)
        self._store = self.client.register_script(lua.STORE)
        self._tombstone = self.client.register_script(lua.TOMBSTONE)

    async def get(self, keys: list[tuple[str, str | None]]) -> list[bytes | None]:
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

    async def get_or_lease(
        self, key: str, hash_field: str | None, token: str, lease_ms: int, key_ttl: int, bound: ListBound | None = None
    ) -> tuple[LeaseState, bytes | None]:
        fields, size = bound or (0, 0)
        result = await self._get_or_lease(keys=[key], args=[hash_field or "", token, lease_ms, key_ttl, fields, size])
        state = LeaseState(int(result[0]))
        return state, (result[1] if state is LeaseState.hit else None)

    async def fill(
        self, key: str, hash_field: str | None, token: str, value: bytes, ttl: int, bound: ListBound | None = None
    ) -> bool:
        size = bound.bytes if bound else 0
        return bool(await self._fill(keys=[key], args=[hash_field or "", token, value, ttl, size]))

    async def release(self, key: str, hash_field: str | None, token: str) -> bool:
        return bool(await self._release(keys=[key], args=[hash_field or "", token]))

    async def store(self, key: str, value: bytes, ttl: int) -> bool:
        return bool(await self._store(keys=[key], args=[value, ttl]))

    async def tombstone(self, keys: list[tuple[str, bool]], ttl_ms: int) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for key, is_hash in keys:
                await self._tombstone(keys=[key], args=["1" if is_hash else "0", ttl_ms], client=pipe)
            await pipe.execute()

    async def delete(self, keys: list[str]) -> None:
        # One DEL per key in one pipeline: a multi-key DEL would span hash slots on Redis Cluster.
        if len(keys) == 1:
            await self.client.delete(keys[0])
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.delete(key)
            await pipe.execute()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def close(self) -> None:
        await self.client.aclose()
        await self._pool.disconnect()
