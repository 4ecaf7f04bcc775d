"""Who is calling: the bearer token's principal, read through the cache, and the checks every route relies on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from app.auth.accounts import accounts_of
from app.auth.schemas import AuthUser, Role
from app.core.cache import cache
from app.core.config import Settings
from app.core.db import read_session
from app.core.errors import Forbidden, Unauthorized
from app.core.security import InvalidToken, TokenPurpose, decode_token

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/login", auto_error=False)
BearerToken = Annotated[str | None, Depends(oauth2_scheme)]


class InvalidAccessToken(Unauthorized):
    """Not authenticated: the access token is missing, invalid or expired."""

    code = "InvalidAccessToken"


class InactiveAccount(Forbidden):
    """This account is deactivated."""

    code = "InactiveAccount"


class AdminRequired(Forbidden):
    """Administrator rights are required."""

    code = "AdminRequired"


async def resolve_principal(
    request: Request, token: str | None, also_read: Callable[[int], str | None] | None = None
) -> tuple[AuthUser, bytes | None]:
    """The token's principal, checked: signed by us, current, of a live account whose sessions it belongs to.
    `also_read(user_id)` may name one more cache key that the caller will need; it is read in the same round trip
    as the principal's (the hot path: a cached contact costs one Redis round trip in all), and its bytes returned.
    Settings come from the app and a session only on a cache miss: this runs on every authenticated request."""
    settings: Settings = request.app.state.settings
    if not token or len(token) > 4096:
        raise InvalidAccessToken
    try:
        claims = decode_token(settings, token, TokenPurpose.access)
    except InvalidToken as exc:
        raise InvalidAccessToken from exc
    user_id = int(claims["sub"])
    keys: list[tuple[str, str | None]] = [(cache.user_key(user_id), None)]
    extra_key = also_read(user_id) if also_read is not None else None
    if extra_key is not None:
        keys.append((extra_key, None))
    prefetched = await cache.prefetch(keys)
    async with read_session(request) as session:
        user = await accounts_of(request).principal(session, user_id, prefetched=prefetched[0] if prefetched else None)
    # A token minted before the password, role or active flag last changed is dead (sessions ended).
    if user is None or claims.get("ver") != user.token_version:
        raise InvalidAccessToken
    if not user.is_active:
        raise InactiveAccount
    return user, (prefetched[1] if prefetched is not None and extra_key is not None else None)


async def get_current_user(request: Request, token: BearerToken) -> AuthUser:
    """The bearer token's user (401 without a valid token, 403 for a deactivated account)."""
    user, _ = await resolve_principal(request, token)
    return user


CurrentUser = Annotated[AuthUser, Depends(get_current_user)]


async def get_admin_user(user: CurrentUser) -> AuthUser:
    if user.role != Role.admin:
        raise AdminRequired
    return user


AdminUser = Annotated[AuthUser, Depends(get_admin_user)]
