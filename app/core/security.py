"""Password hashing (argon2id via pwdlib, off the event loop) and JWTs (PyJWT, one audience per purpose)."""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from functools import lru_cache
from typing import Any

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from app.core.config import Settings

# Hashing is the most expensive thing the service does (tens of ms, tens of MiB): cap how many run at once.
_HASH_SLOTS = asyncio.Semaphore(2)


@lru_cache
def _password_hash(time_cost: int, memory_cost: int, parallelism: int) -> PasswordHash:
    return PasswordHash((Argon2Hasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism),))


def password_hasher(settings: Settings) -> PasswordHash:
    return _password_hash(settings.argon2_time_cost, settings.argon2_memory_cost, settings.argon2_parallelism)


async def hash_password(settings: Settings, password: str) -> str:
    async with _HASH_SLOTS:
        return await asyncio.to_thread(password_hasher(settings).hash, password)


async def verify_password(settings: Settings, password: str, hashed: str | None) -> bool:
    """Constant work whether or not the account exists: an unknown user is checked against a dummy hash."""
    hasher = password_hasher(settings)
    target = hashed or _dummy_hash(settings)
    async with _HASH_SLOTS:
        ok = await asyncio.to_thread(hasher.verify, password, target)
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
