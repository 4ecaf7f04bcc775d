"""The account routes under /auth: sign up, confirm the email address, and recover a forgotten password."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from app.auth.schemas import TokenString
from app.core.config import SettingsDep
from app.core.db import SessionDep
from app.core.dependencies import MailerDep
from app.core.openapi import errors
from app.core.rate_limit import enforce, request_ip
from app.users import passwords, service
from app.users.schemas import EmailRequest, Message, ResetPasswordRequest, UserCreate, UserRead

router = APIRouter(prefix="/auth", tags=["auth"])

ACCEPTED = "If the address belongs to an account that needs it, a message is on its way."


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=UserRead, responses=errors(409, 429))
async def register(
    body: UserCreate, request: Request, session: SessionDep, settings: SettingsDep, mailer: MailerDep
) -> UserRead:
    """Create an account (role `user`, not yet verified) and send it a verification link."""
    await enforce(request, settings.rate_limit_register_ip, "register-ip", request_ip(request))
    user = await service.register(session, settings, mailer, body.email, body.password)
    return UserRead.model_validate(user)


@router.get("/verify-email", response_model=UserRead, responses=errors(400))
async def verify_email(
    token: Annotated[TokenString, Query(description="The token from the verification link")],
    session: SessionDep,
    settings: SettingsDep,
) -> UserRead:
    """Mark the account verified (the link sent by email after registration)."""
    user = await service.verify_email(session, settings, token)
    return UserRead.model_validate(user)


async def _account_email_limits(request: Request, settings: SettingsDep, email: str, action: str) -> None:
    await enforce(request, settings.rate_limit_account_email_ip, f"{action}-ip", request_ip(request))
    await enforce(request, settings.rate_limit_account_email, f"{action}-account", email.lower())


@router.post(
    "/resend-verification", status_code=status.HTTP_202_ACCEPTED, response_model=Message, responses=errors(429)
)
async def resend_verification(
    body: EmailRequest, request: Request, session: SessionDep, settings: SettingsDep, mailer: MailerDep
) -> Message:
    """Send a new verification link. Answers 202 whether or not the address has an account."""
    await _account_email_limits(request, settings, body.email, "resend")
    await service.resend_verification(session, settings, mailer, body.email)
    return Message(detail=ACCEPTED)


@router.post("/forgot-password", status_code=status.HTTP_202_ACCEPTED, response_model=Message, responses=errors(429))
async def forgot_password(
    body: EmailRequest, request: Request, session: SessionDep, settings: SettingsDep, mailer: MailerDep
) -> Message:
    """Send a password-reset link. Answers 202 whether or not the address has an account."""
    await _account_email_limits(request, settings, body.email, "forgot")
    await passwords.forgot_password(session, settings, mailer, body.email)
    return Message(detail=ACCEPTED)


@router.post("/reset-password", status_code=status.HTTP_204_NO_CONTENT, responses=errors(400))
async def reset_password(body: ResetPasswordRequest, session: SessionDep, settings: SettingsDep) -> None:
    """Set a new password with the token from a reset link. The token works once, expires, and dies when the
    password changes; every existing session ends."""
    await passwords.reset_password(session, settings, body.token, body.new_password)
