"""Passwords: change (knowing the current one), forgotten-password mail and reset by its link. Each ends every
session of the account."""

from __future__ import annotations

import hmac

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import service as sessions
from app.auth import tokens
from app.auth.schemas import TokenPair
from app.core.config import Settings
from app.core.email import Mailer
from app.core.errors import AppError
from app.core.security import InvalidToken, TokenPurpose, decode_token, hash_password, verify_password
from app.users import repository
from app.users.mail import reset_mail
from app.users.models import User
from app.users.service import get_user, invalidate_user_around_commit


class WrongCurrentPassword(AppError):
    """The current password is incorrect."""

    code = "WrongCurrentPassword"
    status_code = 400


class InvalidResetToken(AppError):
    """The reset link is invalid, expired or already used; request a new one."""

    code = "InvalidResetToken"
    status_code = 400


async def set_password(db: AsyncSession, settings: Settings, user: User, new_password: str) -> bool:
    """Replace the password the user has now (a compare-and-set on its hash), ending every existing session.
    False if it changed meanwhile."""
    current_hash = user.hashed_password
    new_hash = await hash_password(settings, new_password)
    if not await repository.replace_password(db, user, current_hash, new_hash):
        return False
    invalidate_user_around_commit(db, user.id)
    await sessions.end_sessions(db, user.id)
    return True


async def change_password(
    db: AsyncSession, settings: Settings, user_id: int, current_password: str, new_password: str
) -> TokenPair:
    """Change the password (the current one must be given). Every session ends; this one gets a new pair."""
    user = await get_user(db, user_id)
    if not await verify_password(settings, current_password, user.hashed_password):
        raise WrongCurrentPassword
    if not await set_password(db, settings, user, new_password):
        raise WrongCurrentPassword  # changed concurrently: the given password is no longer the current one
    return await sessions.issue_tokens(db, settings, user.id, user.token_version)


async def forgot_password(db: AsyncSession, settings: Settings, mailer: Mailer, email: str) -> None:
    """Always succeeds from the caller's view (same answer, same work on the request path)."""
    user = await repository.get_by_email(db, email)
    if user is not None and user.is_active:
        mailer.send_later(reset_mail(settings, user))


async def reset_password(db: AsyncSession, settings: Settings, token: str, new_password: str) -> None:
    try:
        claims = decode_token(settings, token, TokenPurpose.reset_password)
    except InvalidToken as exc:
        raise InvalidResetToken from exc
    user = await repository.get_by_id(db, int(claims["sub"]))
    if user is None or not user.is_active:
        raise InvalidResetToken
    expected = tokens.password_fingerprint(settings, user.hashed_password)
    if not hmac.compare_digest(str(claims.get("pwd", "")), expected):
        raise InvalidResetToken  # used already, or the password changed since it was issued
    if not await set_password(db, settings, user, new_password):
        raise InvalidResetToken  # a concurrent reset with the same token won
