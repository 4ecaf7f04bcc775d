"""Minting the service's tokens."""

from __future__ import annotations

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
