"""Rate limits (the `limits` library): Redis storage shared by every worker (on the cache's topology: one server, a
Redis Cluster or a Sentinel-watched master), in-process storage for the embedded default and as the fallback while
Redis does not answer, so limits keep holding and never cause a 500."""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import lru_cache
from typing import Any, TypeVar, cast

from fastapi import Request
from limits import RateLimitItem, parse
from limits.aio.storage import (
    MemoryStorage,
    RedisClusterStorage,
    RedisSentinelStorage,
    RedisStorage,
    SlidingWindowCounterSupport,
    Storage,
)
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from app.core.breaker import CircuitBreaker
from app.core.cache.topology import Topology
from app.core.cache.topology import parse as parse_redis_url
from app.core.config import Settings
from app.core.errors import RateLimited

logger = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")
MAX_UNPARSED = 64


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = settings.rate_limit_enabled
        self._memory = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._shared: SlidingWindowCounterRateLimiter | None = None
        self._storage: Storage | None = None
        dsn = settings.redis_dsn
        if dsn:
            self._storage = _shared_storage(parse_redis_url(dsn), settings)
            self._shared = SlidingWindowCounterRateLimiter(self._storage)
        self._breaker = CircuitBreaker(settings.cache_breaker_threshold, settings.cache_breaker_cooldown)

    async def hit(self, limit: str, *identifiers: str) -> None:
        """Count one request against `limit` (e.g. "10/minute") for `identifiers`; RateLimited when over."""
        if not self.enabled:
            return
        item = _parse(limit)
        allowed, limiter = await self._call(lambda strategy: strategy.hit(item, *identifiers))
        if not allowed:
            raise RateLimited(await self._retry_after(limiter, item, identifiers))

    async def check(self, limit: str, *identifiers: str) -> None:
        """RateLimited if `limit` is spent for `identifiers`, without counting anything (see `record`)."""
        if not self.enabled:
            return
        item = _parse(limit)
        allowed, limiter = await self._call(lambda strategy: strategy.test(item, *identifiers))
        if not allowed:
            raise RateLimited(await self._retry_after(limiter, item, identifiers))

    async def spent(self, limit: str, *identifiers: str) -> bool:
        """Whether `limit` is spent for `identifiers` (nothing is counted)."""
        if not self.enabled:
            return False
        item = _parse(limit)
        allowed, _ = await self._call(lambda strategy: strategy.test(item, *identifiers))
        return not allowed

    async def record(self, limit: str, *identifiers: str) -> None:
        """Count one event (e.g. a failed login) against `limit`; never raises: `check` is what refuses."""
        if self.enabled:
            item = _parse(limit)
            await self._call(lambda strategy: strategy.hit(item, *identifiers))

    async def seen(self, limit: str, *identifiers: str) -> bool:
        """Whether anything was counted against `limit` for `identifiers` in its current or previous window."""
        if not self.enabled:
            return False
        item = _parse(limit)
        key, expiry = item.key_for(*identifiers), item.get_expiry()

        async def window(strategy: SlidingWindowCounterRateLimiter) -> bool:
            storage = cast(SlidingWindowCounterSupport, strategy.storage)
            previous, _, current, _ = await storage.get_sliding_window(key, expiry)
            return previous + current > 0

        found, _ = await self._call(window)
        return found

    async def _call(
        self, operation: Callable[[SlidingWindowCounterRateLimiter], Awaitable[T]]
    ) -> tuple[T, SlidingWindowCounterRateLimiter]:
        """`operation` on the shared storage, or in process while the shared one is down."""
        if self._shared is not None and self._breaker.allow():
            try:
                result = await operation(self._shared)
                self._breaker.record_success()
                return result, self._shared
            except Exception:
                self._breaker.record_failure()
                logger.warning("rate limit storage unavailable; limiting in process")
        return await operation(self._memory), self._memory

    async def retry_after(self, limit: str, *identifiers: str) -> int:
        """Seconds until `limit` lets one more through for `identifiers` (at least 1)."""
        item = _parse(limit)
        try:
            stats, _ = await self._call(lambda strategy: strategy.get_window_stats(item, *identifiers))
            return max(1, math.ceil(stats.reset_time - time.time()))
        except Exception:
            return item.get_expiry()

    async def _retry_after(
        self, limiter: SlidingWindowCounterRateLimiter, item: RateLimitItem, identifiers: Iterable[str]
    ) -> int:
        try:
            stats = await limiter.get_window_stats(item, *identifiers)
            return max(1, math.ceil(stats.reset_time - time.time()))
        except Exception:
            return item.get_expiry()


def _shared_storage(topology: Topology, settings: Settings) -> Storage:
    """The `limits` storage on Redis: short timeouts and no retries, as the cache's (the in-process fallback
    answers while it does not)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    timeouts = {"socket_timeout": settings.cache_op_timeout, "socket_connect_timeout": settings.cache_op_timeout}
    options: dict[str, Any] = {**timeouts, "retry": Retry(NoBackoff(), 0)}
    common: dict[str, Any] = {
        "implementation": "redispy",
        "wrap_exceptions": True,
        "key_prefix": f"{settings.cache_key_prefix}LIMITS",
    }
    uri = topology.limits_uri()
    auth = {k: v for k, v in topology.auth().items() if v is not None}
    if topology.kind == "cluster":
        return RedisClusterStorage(uri, **common, require_full_coverage=False, **auth, **options)
    if topology.kind == "sentinel":
        # The counters live on the master (never read from a replica, which may lag); sentinels have no password.
        asked: dict[str, Any] = {**timeouts, "password": None, "username": None}
        return RedisSentinelStorage(
            uri, **common, use_replicas=False, sentinel_kwargs=asked, db=topology.db, **auth, **options
        )
    return RedisStorage(uri, **common, **options)


@lru_cache(maxsize=64)
def _parse(limit: str) -> RateLimitItem:
    return parse(limit)


@lru_cache(maxsize=16)
def _networks(trusted: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _ip(address: str) -> IPAddress | None:
    """The address, IPv4-mapped IPv6 as IPv4; also from a proxy's `ip:port` or `[ipv6]:port` form. None if it
    is none of these."""
    candidates = [address]
    if address.startswith("["):
        candidates = [address[1:].partition("]")[0]]
    elif address.count(":") == 1:
        candidates.append(address.partition(":")[0])
    for candidate in candidates:
        try:
            ip = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        return ip
    return None


def _trusted(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in network for network in networks)


def client_ip(request: Request, trusted_proxies: Iterable[str]) -> str:
    """The client's address: the socket peer, unless the peer is a trusted proxy; then the right-most address
    in X-Forwarded-For that is not itself a trusted proxy (addresses left of it are the client's to forge).

    An entry there that is no address (`unknown`, an obfuscated name) was written by the proxy chain, not by
    the client; it comes back as `unparsed:<entry>` (cut to 64 characters), a bucket of its own, so that such
    clients neither share the proxy's bucket with everyone else nor pass for an address."""
    peer = request.client.host if request.client else "unknown"
    networks = _networks(tuple(trusted_proxies))
    if not networks or not _trusted(peer, networks):
        return peer
    # Several header lines form one list (RFC 9110 5.3): a proxy may append a line of its own.
    forwarded = [
        part.strip() for line in request.headers.getlist("x-forwarded-for") for part in line.split(",") if part.strip()
    ]
    for address in reversed(forwarded):
        if not _trusted(address, networks):
            ip = _ip(address)
            return str(ip) if ip is not None else f"unparsed:{address[:MAX_UNPARSED]}"
    return peer


def client_network(address: str) -> str:
    """What per-address limits count: an IPv4 address as it is (IPv4-mapped IPv6 too), an IPv6 address by its
    /64, the smallest network a subscriber is given (one host can use every address in it)."""
    ip = _ip(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


async def enforce(request: Request, limit: str, *identifiers: str) -> None:
    """Count this request against `limit` for `identifiers` (429 with Retry-After when over)."""
    await rate_limiter(request).hit(limit, *identifiers)


def request_ip(request: Request) -> str:
    """The client's network as per-address limits count it (see `client_ip` and `client_network`)."""
    return client_network(client_ip(request, rate_limiter(request).settings.trusted_proxies))
