from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, status

from app.auth import service
from app.auth.schemas import (
    EmailRequest,
    LoginForm,
    Message,
    RefreshRequest,
    ResetPasswordRequest,
    TokenPair,
    TokenString,
)
from app.auth.throttle import LoginThrottle
from app.core.config import SettingsDep
from app.core.db import SessionDep
from app.core.dependencies import MailerDep
from app.core.openapi import errors
from app.core.rate_limit import enforce, rate_limiter, request_ip
from app.users.schemas import UserCreate, UserRead

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


@router.post("/login", response_model=TokenPair, responses=errors(401, 403, 429))
async def login(
    request: Request, session: SessionDep, settings: SettingsDep, form: Annotated[LoginForm, Form()]
) -> TokenPair:
    """Log in with the OAuth2 password form (`username` is the email). Unknown email and wrong password give
    the same 401. Limited per client network, and for failed attempts per account and network: a stranger's
    failures do not lock the account's owner out (see app/auth/throttle.py)."""
    network = request_ip(request)
    await enforce(request, settings.rate_limit_login_ip, "login-ip", network)
    throttle = LoginThrottle(rate_limiter(request), settings, form.username, network)
    await throttle.check()
    try:
        return await service.login(session, settings, form.username, form.password)
    except service.InvalidCredentials:
        await throttle.failed()
        raise


@router.post("/refresh", response_model=TokenPair, responses=errors(401))
async def refresh(body: RefreshRequest, session: SessionDep, settings: SettingsDep) -> TokenPair:
    """Exchange a refresh token for a new pair. Each refresh token works once; reusing one ends its sessions."""
    return await service.refresh(session, settings, body.refresh_token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401))
async def logout(body: RefreshRequest, session: SessionDep, settings: SettingsDep) -> None:
    """End the session this refresh token belongs to."""
    await service.logout(session, settings, body.refresh_token)


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
    await service.forgot_password(session, settings, mailer, body.email)
    return Message(detail=ACCEPTED)


@router.post("/reset-password", status_code=status.HTTP_204_NO_CONTENT, responses=errors(400))
async def reset_password(body: ResetPasswordRequest, session: SessionDep, settings: SettingsDep) -> None:
    """Set a new password with the token from a reset link. The token works once, expires, and dies when the
    password changes; every existing session ends."""
    await service.reset_password(session, settings, body.token, body.new_password)
