"""Minting the service's tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.core.config import Settings
from app.core.db import utcnow
from app.core.security import TokenPurpose, create_token


def access_token(settings: Settings, user_id: int, token_version: int) -> str:
    return create_token(settings, TokenPurpose.access, str(user_id), settings.access_token_ttl, ver=token_version)


@dataclass(frozen=True)
class NewRefreshToken:
    token: str
    jti: str
    family_id: str


def refresh_token(
    settings: Settings, user_id: int, token_version: int, family_id: str | None = None
) -> NewRefreshToken:
    jti = secrets.token_hex(16)
    family = family_id or secrets.token_hex(16)
    token = create_token(
        settings, TokenPurpose.refresh, str(user_id), settings.refresh_token_ttl, jti=jti, fam=family, ver=token_version
    )
    return NewRefreshToken(token, jti, family)


def refresh_expiry(settings: Settings) -> datetime:
    return utcnow() + timedelta(seconds=settings.refresh_token_ttl)


def password_fingerprint(settings: Settings, hashed_password: str) -> str:
    """Ties a reset token to the password it replaces: once the password changes, the token is dead."""
    key = settings.jwt_key.encode()
    return hmac.new(key, hashed_password.encode(), hashlib.sha256).hexdigest()[:32]


def verify_email_token(settings: Settings, user_id: int, email: str) -> str:
    return create_token(settings, TokenPurpose.verify_email, str(user_id), settings.verify_token_ttl, email=email)


def reset_password_token(settings: Settings, user_id: int, hashed_password: str) -> str:
    return create_token(
        settings,
        TokenPurpose.reset_password,
        str(user_id),
        settings.reset_token_ttl,
        pwd=password_fingerprint(settings, hashed_password),
    )
