"""The session routes: log in, refresh a token pair, log out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, status

from app.auth import service
from app.auth.accounts import accounts_of
from app.auth.schemas import LoginForm, RefreshRequest, TokenPair
from app.auth.throttle import LoginThrottle
from app.core.config import SettingsDep
from app.core.db import SessionDep
from app.core.openapi import errors
from app.core.rate_limit import enforce, rate_limiter, request_ip

router = APIRouter(prefix="/auth", tags=["auth"])


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
        return await service.login(session, settings, accounts_of(request), form.username, form.password)
    except service.InvalidCredentials:
        await throttle.failed()
        raise


@router.post("/refresh", response_model=TokenPair, responses=errors(401))
async def refresh(body: RefreshRequest, request: Request, session: SessionDep, settings: SettingsDep) -> TokenPair:
    """Exchange a refresh token for a new pair. Each refresh token works once; reusing one ends its sessions."""
    return await service.refresh(session, settings, accounts_of(request), body.refresh_token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401))
async def logout(body: RefreshRequest, session: SessionDep, settings: SettingsDep) -> None:
    """End the session this refresh token belongs to."""
    await service.logout(session, settings, body.refresh_token)
