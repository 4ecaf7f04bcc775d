"""Login, token refresh with rotation and reuse detection, logout, email verification, password reset."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import repository, tokens
from app.auth.schemas import TokenPair
from app.core.config import Settings
from app.core.db import utcnow
from app.core.email import Mail, Mailer
from app.core.errors import AppError, Forbidden, Unauthorized
from app.core.security import InvalidToken, TokenPurpose, decode_token, hash_password, verify_password
from app.users import service as users_service
from app.users.models import User


class InvalidCredentials(Unauthorized):
    """Incorrect email or password."""


class InactiveUser(Forbidden):
    """This account is deactivated."""


class EmailNotVerified(Forbidden):
    """Verify your email address before logging in; a new link can be requested at /auth/resend-verification."""


class InvalidRefreshToken(Unauthorized):
    """The refresh token is invalid, expired or revoked."""


class RefreshTokenReused(InvalidRefreshToken):
    """The refresh token was already used; every session of this login has been ended."""

    keep_changes = True  # the family's revocation must be committed although the request fails


class InvalidVerificationToken(AppError):
    """The verification link is invalid or expired; request a new one."""

    status_code = 400


class InvalidResetToken(AppError):
    """The reset link is invalid, expired or already used; request a new one."""

    status_code = 400


# -- sessions -----------------------------------------------------------------------------------------------


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
    if settings.require_email_verification and not user.is_verified:
        raise EmailNotVerified
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
    record = await repository.get(db, str(claims["jti"]))
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
    if not await repository.mark_used(db, record.jti):
        # A concurrent use spent it between our read and our write: one of the two is a replay. The winner has
        # committed its new token by now (we waited for its lock), so revoking the family ends that one too.
        await repository.revoke_family(db, record.family_id)
        raise RefreshTokenReused
    return await issue_tokens(db, settings, user, record.family_id)


async def logout(db: AsyncSession, settings: Settings, refresh_token: str) -> None:
    try:
        claims = decode_token(settings, refresh_token, TokenPurpose.refresh)
    except InvalidToken as exc:
        raise InvalidRefreshToken from exc
    record = await repository.get(db, str(claims["jti"]))
    if record is None or record.user_id != int(claims["sub"]):
        raise InvalidRefreshToken
    await repository.revoke_family(db, record.family_id)


async def end_sessions(db: AsyncSession, user: User) -> None:
    """Revoke every refresh token of `user` (access tokens die with the token_version bump)."""
    await repository.revoke_all_for_user(db, user.id)


async def admin_update_user(db: AsyncSession, actor_id: int, user_id: int, changes: dict[str, Any]) -> User:
    """An administrator sets another account's role or active flag. A change of either ends that account's
    sessions: its access tokens die with the token_version bump, its refresh-token records are revoked."""
    target = await users_service.get_user_by_id(db, user_id)
    version_before = target.token_version if target is not None else None
    user = await users_service.admin_update_user(db, actor_id, user_id, changes)
    if user.token_version != version_before:
        await end_sessions(db, user)
    return user


# -- email verification ----------------------------------------------------------------------------------------


def _link(settings: Settings, path: str, token: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}{path}?token={quote(token)}"


def send_verification(settings: Settings, mailer: Mailer, user: User) -> None:
    link = _link(settings, "/api/v1/auth/verify-email", tokens.verify_email_token(settings, user.id, user.email))
    mailer.send_later(
        Mail(
            to=user.email,
            subject="Confirm your email address",
            body=f"Welcome to {settings.app_name}.\n\nConfirm your email address by opening this link:\n{link}\n\n"
            "If you did not create an account, ignore this message.\n",
        )
    )


async def register(db: AsyncSession, settings: Settings, mailer: Mailer, email: str, password: str) -> User:
    user = await users_service.register_user(db, settings, email, password)
    send_verification(settings, mailer, user)
    return user


async def verify_email(db: AsyncSession, settings: Settings, token: str) -> User:
    try:
        claims = decode_token(settings, token, TokenPurpose.verify_email)
    except InvalidToken as exc:
        raise InvalidVerificationToken from exc
    user = await users_service.get_user_by_id(db, int(claims["sub"]))
    if user is None or claims.get("email") != user.email:
        raise InvalidVerificationToken
    if not user.is_verified:
        await users_service.update_user(db, user, is_verified=True)
    return user


async def resend_verification(db: AsyncSession, settings: Settings, mailer: Mailer, email: str) -> None:
    """Always succeeds from the caller's view; mails only an existing, active, unverified account."""
    user = await users_service.get_user_by_email(db, email)
    if user is not None and user.is_active and not user.is_verified:
        send_verification(settings, mailer, user)


# -- password reset --------------------------------------------------------------------------------------------


async def forgot_password(db: AsyncSession, settings: Settings, mailer: Mailer, email: str) -> None:
    """Always succeeds from the caller's view (same answer, same work on the request path)."""
    user = await users_service.get_user_by_email(db, email)
    if user is None or not user.is_active:
        return
    link = _link(settings, "/reset-password", tokens.reset_password_token(settings, user.id, user.hashed_password))
    minutes = settings.reset_token_ttl // 60
    mailer.send_later(
        Mail(
            to=user.email,
            subject="Reset your password",
            body=f"Someone asked to reset the password of your {settings.app_name} account.\n\n"
            f"Reset it within {minutes} minutes at:\n{link}\n\n"
            "POST the token from this link with your new password to /api/v1/auth/reset-password.\n"
            "If it was not you, ignore this message: your password stays as it is.\n",
        )
    )


async def reset_password(db: AsyncSession, settings: Settings, token: str, new_password: str) -> None:
    try:
        claims = decode_token(settings, token, TokenPurpose.reset_password)
    except InvalidToken as exc:
        raise InvalidResetToken from exc
    user = await users_service.get_user_by_id(db, int(claims["sub"]))
    if user is None or not user.is_active:
        raise InvalidResetToken
    expected = tokens.password_fingerprint(settings, user.hashed_password)
    if not hmac.compare_digest(str(claims.get("pwd", "")), expected):
        raise InvalidResetToken  # used already, or the password changed since it was issued
    if not await set_password(db, settings, user, new_password):
        raise InvalidResetToken  # a concurrent reset with the same token won


async def set_password(db: AsyncSession, settings: Settings, user: User, new_password: str) -> bool:
    """Replace the password the user has now, ending every existing session. False if it changed meanwhile."""
    current_hash = user.hashed_password
    new_hash = await hash_password(settings, new_password)
    if not await users_service.replace_password(db, user, current_hash, new_hash):
        return False
    await end_sessions(db, user)
    return True


async def change_password(
    db: AsyncSession, settings: Settings, user_id: int, current_password: str, new_password: str
) -> TokenPair:
    """Change the password (the current one must be given). Every session ends; this one gets a new pair."""
    user = await users_service.get_user(db, user_id)
    if not await verify_password(settings, current_password, user.hashed_password):
        raise WrongCurrentPassword
    if not await set_password(db, settings, user, new_password):
        raise WrongCurrentPassword  # changed concurrently: the given password is no longer the current one
    return await issue_tokens(db, settings, user)


class WrongCurrentPassword(AppError):
    """The current password is incorrect."""

    status_code = 400
