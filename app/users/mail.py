"""The messages the users feature sends: the verification link after sign-up, the password-reset link."""

from __future__ import annotations

from urllib.parse import quote

from app.auth import tokens
from app.core.config import Settings
from app.core.email import Mail
from app.users.models import User


def _link(settings: Settings, path: str, token: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}{path}?token={quote(token)}"


def verification_mail(settings: Settings, user: User) -> Mail:
    # The web page (app/web) confirms the address and says so in words; API clients may call
    # GET /api/v1/auth/verify-email with the same token.
    link = _link(settings, "/verify-email", tokens.verify_email_token(settings, user.id, user.email))
    return Mail(
        to=user.email,
        subject="Confirm your email address",
        body=f"Welcome to {settings.app_name}.\n\nConfirm your email address by opening this link:\n{link}\n\n"
        "If you did not create an account, ignore this message.\n",
    )


def reset_mail(settings: Settings, user: User) -> Mail:
    link = _link(settings, "/reset-password", tokens.reset_password_token(settings, user.id, user.hashed_password))
    return Mail(
        to=user.email,
        subject="Reset your password",
        body=f"Someone asked to reset the password of your {settings.app_name} account.\n\n"
        f"Reset it within {settings.reset_token_ttl // 60} minutes at:\n{link}\n\n"
        "The link opens a page where you choose the new password (API clients may POST the token with the new\n"
        "password to /api/v1/auth/reset-password).\n"
        "If it was not you, ignore this message: your password stays as it is.\n",
    )
