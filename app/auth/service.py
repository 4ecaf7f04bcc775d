"""Sessions: login, token pairs, refresh with rotation and reuse detection, logout, and ending every session."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import repository, tokens
from app.auth.accounts import Account, Accounts
from app.auth.principal import InactiveAccount
from app.auth.schemas import TokenPair
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import Forbidden, Unauthorized
from app.core.security import InvalidToken, TokenPurpose, decode_token, verify_password


class InvalidCredentials(Unauthorized):
    """Incorrect email or password."""

    code = "InvalidCredentials"


class EmailNotVerified(Forbidden):
    """Verify your email address before logging in; a new link can be requested at /auth/resend-verification."""

    code = "EmailNotVerified"


class InvalidRefreshToken(Unauthorized):
    """The refresh token is invalid, expired or revoked."""

    code = "InvalidRefreshToken"


class RefreshTokenReused(InvalidRefreshToken):
    """The refresh token was already used; every session of this login has been ended."""

    code = "RefreshTokenReused"
    keep_changes = True  # the family's revocation must be committed although the request fails


async def issue_tokens(
    db: AsyncSession, settings: Settings, user_id: int, token_version: int, family_id: str | None = None
) -> TokenPair:
    """A new access token and a new refresh token (of `family_id`, else of a new login) for the account."""
    refresh = tokens.refresh_token(settings, user_id, token_version, family_id)
    await repository.add(db, refresh.jti, refresh.family_id, user_id, tokens.refresh_expiry(settings))
    return TokenPair(access_token=tokens.access_token(settings, user_id, token_version), refresh_token=refresh.token)


async def authenticate(db: AsyncSession, settings: Settings, accounts: Accounts, email: str, password: str) -> Account:
    """The account with these credentials. Unknown email and wrong password answer alike, in alike time."""
    account = await accounts.by_email(db, email)
    if not await verify_password(settings, password, account.hashed_password if account else None) or not account:
        raise InvalidCredentials
    if not account.is_active:
        raise InactiveAccount
    if settings.require_email_verification and not account.is_verified:
        raise EmailNotVerified
    return account


async def login(db: AsyncSession, settings: Settings, accounts: Accounts, email: str, password: str) -> TokenPair:
    account = await authenticate(db, settings, accounts, email, password)
    return await issue_tokens(db, settings, account.id, account.token_version)


async def refresh(db: AsyncSession, settings: Settings, accounts: Accounts, refresh_token: str) -> TokenPair:
    """Rotate: the presented token is spent and a new pair of the same family is issued. Presenting a spent
    token again means it was stolen (or replayed): the whole family is revoked."""
    try:
        claims = decode_token(settings, refresh_token, TokenPurpose.refresh)
    except InvalidToken as exc:
        raise InvalidRefreshToken from exc
    record = await repository.get(db, str(claims["jti"]))
    if record is None or record.revoked_at is not None or record.user_id != int(claims["sub"]):
        raise InvalidRefreshToken
    if record.used_at is not None:
        await repository.revoke_family(db, record.family_id)
        raise RefreshTokenReused
    if record.expires_at <= utcnow():
        raise InvalidRefreshToken
    account = await accounts.by_id(db, record.user_id)
    if account is None or not account.is_active or claims.get("ver") != account.token_version:
        raise InvalidRefreshToken
    if not await repository.mark_used(db, record.jti):
        # A concurrent use spent it between our read and our write: one of the two is a replay. The winner has
        # committed its new token by now (we waited for its lock), so revoking the family ends that one too.
        await repository.revoke_family(db, record.family_id)
        raise RefreshTokenReused
    return await issue_tokens(db, settings, account.id, account.token_version, record.family_id)


async def logout(db: AsyncSession, settings: Settings, refresh_token: str) -> None:
    try:
        claims = decode_token(settings, refresh_token, TokenPurpose.refresh)
    except InvalidToken as exc:
        raise InvalidRefreshToken from exc
    record = await repository.get(db, str(claims["jti"]))
    if record is None or record.user_id != int(claims["sub"]):
        raise InvalidRefreshToken
    await repository.revoke_family(db, record.family_id)


async def end_sessions(db: AsyncSession, user_id: int) -> None:
    """Revoke every refresh token of the account (its access tokens die with its token_version bump)."""
    await repository.revoke_all_for_user(db, user_id)
