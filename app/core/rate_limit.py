"""Rate limits (the `limits` library): Redis storage shared by every worker, in-process storage for the embedded
default and as the fallback while Redis does not answer, so limits keep holding and never cause a 500."""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from fastapi import Request
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from app.core.breaker import CircuitBreaker
from app.core.config import Settings
from app.core.errors import RateLimited

logger = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = settings.rate_limit_enabled
        self._memory = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._shared: SlidingWindowCounterRateLimiter | None = None
        self._storage: Storage | None = None
        dsn = settings.redis_dsn
        if dsn:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            options: dict[str, Any] = {
                "socket_timeout": settings.cache_op_timeout,
                "socket_connect_timeout": settings.cache_op_timeout,
                "retry": Retry(NoBackoff(), 0),
            }
            self._storage = RedisStorage(
                "async+" + dsn,
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=f"{settings.cache_key_prefix}LIMITS",
                **options,
            )
            self._shared = SlidingWindowCounterRateLimiter(self._storage)
        self._breaker = CircuitBreaker(settings.cache_breaker_threshold, settings.cache_breaker_cooldown)

    async def hit(self, limit: str, *identifiers: str) -> None:
        """Count one request against `limit` (e.g. "10/minute") for `identifiers`; RateLimited when over."""
        if not self.enabled:
            return
        item = _parse(limit)
        limiter = self._memory
        if self._shared is not None and self._breaker.allow():
            try:
                allowed = await self._shared.hit(item, *identifiers)
                self._breaker.record_success()
                limiter = self._shared
            except Exception:
                self._breaker.record_failure()
                logger.warning("rate limit storage unavailable; limiting in process")
                allowed = await self._memory.hit(item, *identifiers)
        else:
            allowed = await self._memory.hit(item, *identifiers)
        if not allowed:
            raise RateLimited(await self._retry_after(limiter, item, identifiers))

    async def _retry_after(
        self, limiter: SlidingWindowCounterRateLimiter, item: RateLimitItem, identifiers: Iterable[str]
    ) -> int:
        try:
            stats = await limiter.get_window_stats(item, *identifiers)
            return max(1, math.ceil(stats.reset_time - time.time()))
        except Exception:
            return item.get_expiry()


@lru_cache(maxsize=64)
def _parse(limit: str) -> RateLimitItem:
    return parse(limit)


@lru_cache(maxsize=16)
def _networks(trusted: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _trusted(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(request: Request, trusted_proxies: Iterable[str]) -> str:
    """The client's address: the socket peer, unless the peer is a trusted proxy; then the right-most address
    in X-Forwarded-For that is not itself a trusted proxy (addresses left of it are the client's to forge)."""
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
            try:
                return str(ipaddress.ip_address(address))
            except ValueError:
                return peer
    return peer


async def enforce(request: Request, limit: str, *identifiers: str) -> None:
    """Count this request against `limit` for `identifiers` (429 with Retry-After when over)."""
    limiter: RateLimiter = request.app.state.rate_limiter
    await limiter.hit(limit, *identifiers)


def request_ip(request: Request) -> str:
    limiter: RateLimiter = request.app.state.rate_limiter
    return client_ip(request, limiter.settings.trusted_proxies)
