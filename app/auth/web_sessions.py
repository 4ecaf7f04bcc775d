"""Browser sessions of the web pages: a signed token in a cookie naming a session record (a refresh-token row of its
own family), ended by logout, and by a password change, demotion or deactivation like every token (token_version)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import repository, tokens
from app.auth.accounts import Account, accounts_of
from app.auth.schemas import AuthUser
from app.core.config import Settings
from app.core.db import read_session, utcnow
from app.core.security import InvalidToken, TokenPurpose, create_token, decode_token


class InvalidWebSession(Exception):
    """No live session: the cookie is missing, forged, expired, logged out or of an older token_version. Never an
    answer of its own: the pages send the visitor to the login form."""


async def start(db: AsyncSession, settings: Settings, account: Account) -> str:
    """A new session of `account` (after its credentials were checked): the cookie's value."""
    sid = secrets.token_hex(16)
    await repository.add(db, sid, sid, account.id, tokens.refresh_expiry(settings))
    return create_token(
        settings,
        TokenPurpose.web_session,
        str(account.id),
        settings.refresh_token_ttl,
        sid=sid,
        ver=account.token_version,
    )


def _claims(settings: Settings, token: str) -> dict[str, Any]:
    if not token or len(token) > 4096:
        raise InvalidWebSession
    try:
        return decode_token(settings, token, TokenPurpose.web_session)
    except InvalidToken as exc:
        raise InvalidWebSession from exc


def session_id(settings: Settings, token: str) -> str:
    """The session id a cookie names (its signature checked), else InvalidWebSession."""
    return str(_claims(settings, token)["sid"])


async def resolve(request: Request, token: str) -> tuple[AuthUser, str]:
    """The live session's principal and id. The principal comes through the cache (a password change, demotion
    or deactivation bumps token_version and invalidates it at commit); the record says whether logout ended it."""
    claims = _claims(request.app.state.settings, token)
    user_id, sid = int(claims["sub"]), str(claims["sid"])
    async with read_session(request) as session:
        user = await accounts_of(request).principal(session, user_id)
        if user is None or claims.get("ver") != user.token_version or not user.is_active:
            raise InvalidWebSession
        record = await repository.get(session, sid)
    if record is None or record.user_id != user_id or record.revoked_at is not None or record.expires_at <= utcnow():
        raise InvalidWebSession
    return user, sid


async def end(db: AsyncSession, settings: Settings, token: str) -> None:
    """Log out: the session's record is revoked (a copy of the cookie is worthless from now on)."""
    try:
        sid = session_id(settings, token)
    except InvalidWebSession:
        return
    await repository.revoke_family(db, sid)


def csrf_token(settings: Settings, binding: str) -> str:
    """The anti-forgery token of a session (or of a visitor's pre-login cookie): derived, so nothing is stored,
    and a page of one session is no use in another."""
    key = settings.jwt_key.encode()
    return hmac.new(key, f"csrf:{binding}".encode(), hashlib.sha256).hexdigest()


def csrf_ok(settings: Settings, binding: str, presented: str | None) -> bool:
    return bool(binding) and bool(presented) and hmac.compare_digest(csrf_token(settings, binding), presented or "")
