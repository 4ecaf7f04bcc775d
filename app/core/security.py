"""Password hashing (argon2id via pwdlib, off the event loop) and JWTs (PyJWT, one audience per purpose)."""

from __future__ import annotations

import asyncio
import enum
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, TypeVar

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from app.core.config import Settings
from app.core.errors import ServiceUnavailable

T = TypeVar("T")


class PasswordHashingBusy(ServiceUnavailable):
    """Too many password checks are waiting; try again in a moment."""

    code = "PasswordHashingBusy"


class HashingPool:
    """Password hashing, the most expensive thing the service does (tens of ms, tens of MiB each): a thread pool
    of its own, so that other thread work (image processing, file I/O, the loop's default executor) cannot make
    logins wait and logins cannot starve it, and a bounded queue, so that a flood of logins is refused at once
    (503 with Retry-After) instead of queueing without end."""

    def __init__(self, workers: int, queue_max: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="password-hash")
        self._capacity = workers + queue_max
        self._pending = 0  # submitted and not finished (running or queued); a done callback in the worker lowers it
        self._lock = threading.Lock()

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._pending >= self._capacity:
                raise PasswordHashingBusy
            self._pending += 1
        try:
            future = self._executor.submit(work, *args)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._release)
        # A caller that goes away (client disconnect) cancels its job if it has not started yet.
        return await asyncio.wrap_future(future)

    def _release(self, _: object = None) -> None:
        with self._lock:
            self._pending -= 1


@lru_cache
def _pool(workers: int, queue_max: int) -> HashingPool:
    return HashingPool(workers, queue_max)


def hashing_pool(settings: Settings) -> HashingPool:
    """The process's pool for these settings (one per distinct size, created on first use)."""
    return _pool(settings.hash_workers, settings.hash_queue_max)


@lru_cache
def _password_hash(time_cost: int, memory_cost: int, parallelism: int) -> PasswordHash:
    return PasswordHash((Argon2Hasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism),))


def password_hasher(settings: Settings) -> PasswordHash:
    return _password_hash(settings.argon2_time_cost, settings.argon2_memory_cost, settings.argon2_parallelism)


async def hash_password(settings: Settings, password: str) -> str:
    """The argon2id hash of `password`; PasswordHashingBusy (503) when the hashing queue is full."""
    return await hashing_pool(settings).run(password_hasher(settings).hash, password)


async def verify_password(settings: Settings, password: str, hashed: str | None) -> bool:
    """Constant work whether or not the account exists: an unknown user is checked against a dummy hash.
    PasswordHashingBusy (503) when the hashing queue is full."""
    return await hashing_pool(settings).run(_verify, settings, password, hashed)


def _verify(settings: Settings, password: str, hashed: str | None) -> bool:
    ok = password_hasher(settings).verify(password, hashed or _dummy_hash(settings))
    return ok and hashed is not None


@lru_cache
def _dummy_hash_for(time_cost: int, memory_cost: int, parallelism: int) -> str:
    return _password_hash(time_cost, memory_cost, parallelism).hash(secrets.token_urlsafe(16))


def _dummy_hash(settings: Settings) -> str:
    return _dummy_hash_for(settings.argon2_time_cost, settings.argon2_memory_cost, settings.argon2_parallelism)


class TokenPurpose(enum.StrEnum):
    """Each purpose is the token's audience: a token is only ever accepted where its audience is expected."""

    access = "contacts-api:access"
    refresh = "contacts-api:refresh"
    verify_email = "contacts-api:verify-email"
    reset_password = "contacts-api:reset-password"  # noqa: S105 - an audience name
    web_session = "contacts-api:web-session"


class InvalidToken(Exception):
    pass


def create_token(settings: Settings, purpose: TokenPurpose, subject: str, ttl_seconds: int, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "sub": subject,
        "aud": purpose.value,
        "iss": settings.jwt_issuer,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": claims.pop("jti", None) or secrets.token_hex(16),
        **claims,
    }
    return jwt.encode(payload, settings.jwt_key, algorithm=settings.jwt_algorithm)


def decode_token(settings: Settings, token: str, purpose: TokenPurpose) -> dict[str, Any]:
    """The token's claims if it is well-formed, signed by us with the pinned algorithm, current, and meant for
    `purpose`; else InvalidToken."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.jwt_key,
            algorithms=[settings.jwt_algorithm],
            audience=purpose.value,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "nbf", "sub", "aud", "iss", "jti"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    sub = claims.get("sub")
    if not isinstance(sub, str) or not (sub.isascii() and sub.isdigit()) or len(sub) > 19:
        raise InvalidToken("bad subject")
    return claims
