"""Login, token refresh with rotation and reuse detection, logout."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import repository, tokens
from app.auth.schemas import TokenPair
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import Forbidden, Unauthorized
from app.core.security import InvalidToken, TokenPurpose, decode_token, verify_password
from app.users import service as users_service
from app.users.models import User


class InvalidCredentials(Unauthorized):
    """Incorrect email or password."""


class InactiveUser(Forbidden):
    """This account is deactivated."""


class InvalidRefreshToken(Unauthorized):
    """The refresh token is invalid, expired or revoked."""


class RefreshTokenReused(InvalidRefreshToken):
    """The refresh token was already used; every session of this login has been ended."""

    keep_changes = True  # the family's revocation must be committed although the request fails


async def issue_tokens(db: AsyncSession, settings: Settings, user: User, family_id: str | None = None) -> TokenPair:
    refresh = tokens.refresh_token(settings, user.id, user.token_version, family_id)
    await repository.add(db, refresh.jti, refresh.family_id, user.id, tokens.refresh_expiry(settings))
    return TokenPair(
        access_token=tokens.access_token(settings, user.id, user.token_version), refresh_token=refresh.token
    )


async def authenticate(db: AsyncSession, settings: Settings, email: str, password: str) -> User:
    """The user with these credentials. Unknown email and wrong password answer alike, in alike time."""
    user = await users_service.get_user_by_email(db, email)
    if not await verify_password(settings, password, user.hashed_password if user else None) or user is None:
        raise InvalidCredentials
    if not user.is_active:
        raise InactiveUser
    return user


async def login(db: AsyncSession, settings: Settings, email: str, password: str) -> TokenPair:
    user = await authenticate(db, settings, email, password)
    return await issue_tokens(db, settings, user)


async def refresh(db: AsyncSession, settings: Settings, refresh_token: str) -> TokenPair:
    """Rotate: the presented token is spent and a new pair of the same family is issued. Presenting a spent
    token again means it was stolen (or replayed): the whole family is revoked."""
    try:
        claims = decode_token(settings, refresh_token, TokenPurpose.refresh)
    except InvalidToken as exc:
        raise InvalidRefreshToken from exc
    record = await repository.get_for_update(db, str(claims["jti"]))
    if record is None or record.revoked_at is not None or record.user_id != int(claims["sub"]):
        raise InvalidRefreshToken
    if record.used_at is not None:
        await repository.revoke_family(db, record.family_id)
        raise RefreshTokenReused
    if record.expires_at <= utcnow():
        raise InvalidRefreshToken
    user = await users_service.get_user_by_id(db, record.user_id)
    if user is None or not user.is_active or claims.get("ver") != user.token_version:
        raise InvalidRefreshToken
    await repository.mark_used(db, record)
    return await issue_tokens(db, settings, user, record.family_id)


async def logout(db: AsyncSession, settings: Settings, refresh_token: str) -> None:
    try:
        claims = decode_token(settings, refresh_token, TokenPurpose.refresh)
    except InvalidToken as exc:
        raise InvalidRefreshToken from exc
    record = await repository.get_for_update(db, str(claims["jti"]))
    if record is None or record.user_id != int(claims["sub"]):
        raise InvalidRefreshToken
    await repository.revoke_family(db, record.family_id)
