"""App passwords: one random password per device or program (CardDAV clients use HTTP Basic with the account's
email and one of these, never the account password), shown once, stored as a keyed hash, checked without argon2,
and ended with the account's sessions (a password change, demotion or deactivation bumps `token_version`)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from functools import lru_cache

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import repository
from app.auth.accounts import Accounts
from app.auth.models import AppPassword
from app.auth.principal import InactiveAccount
from app.auth.schemas import AuthUser
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import Conflict, NotFound

# 24 characters of base32 (lower case, no 0/1/8/9 to misread): 120 bits, grouped in fours to type on a phone.
ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
LENGTH, GROUP = 24, 4
MAX_APP_PASSWORDS = 50
# A use is recorded at most once a minute: a sync's many requests do not each write a row.
TOUCH_INTERVAL = timedelta(minutes=1)
MAX_PRESENTED_LENGTH = 200


class AppPasswordNotFound(NotFound):
    """No such app password of yours."""

    code = "AppPasswordNotFound"


class TooManyAppPasswords(Conflict):
    """You have the most app passwords allowed (50): revoke one you no longer use first."""

    code = "TooManyAppPasswords"


def new_password() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i : i + GROUP] for i in range(0, LENGTH, GROUP))


@lru_cache(maxsize=8)
def _key(secret: str) -> bytes:
    # A key of its own, derived from the token key: an app password's digest can never pass as anything else's.
    return hashlib.sha256(b"contacts-api app password\x00" + secret.encode()).digest()


def digest(settings: Settings, password: str) -> str:
    """The stored form: HMAC-SHA256 of the password without its dashes and spaces, in lower case (as typed)."""
    typed = password.replace("-", "").replace(" ", "").lower()
    return hmac.new(_key(settings.jwt_key), typed.encode(), hashlib.sha256).hexdigest()


async def create(db: AsyncSession, settings: Settings, user: AuthUser, name: str) -> tuple[AppPassword, str]:
    """A new app password for `user`, and its clear text (shown this once, never stored)."""
    if len(await repository.live_app_passwords(db, user.id, user.token_version)) >= MAX_APP_PASSWORDS:
        raise TooManyAppPasswords
    password = new_password()
    row = await repository.add_app_password(db, user.id, name, digest(settings, password), user.token_version)
    return row, password


async def list_live(db: AsyncSession, user: AuthUser) -> list[AppPassword]:
    return await repository.live_app_passwords(db, user.id, user.token_version)


async def revoke(db: AsyncSession, user: AuthUser, app_password_id: int) -> None:
    if not await repository.delete_app_password(db, user.id, app_password_id):
        raise AppPasswordNotFound


async def authenticate(
    db: AsyncSession, settings: Settings, accounts: Accounts, email: str, password: str
) -> AuthUser | None:
    """The account whose email is `email` if `password` is one of its live app passwords, else None (an account
    password never matches). InactiveAccount for a deactivated account."""
    if not password or len(password) > MAX_PRESENTED_LENGTH:
        return None
    row = await repository.app_password_by_digest(db, digest(settings, password))
    if row is None:
        return None
    user = await accounts.principal(db, row.user_id)
    if user is None or user.token_version != row.token_version or user.email.lower() != email.strip().lower():
        return None
    if not user.is_active:
        raise InactiveAccount
    await repository.touch_app_password(db, row.id, utcnow() - TOUCH_INTERVAL)
    return user
