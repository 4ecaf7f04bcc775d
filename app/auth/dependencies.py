"""Who is calling: the bearer token's user, read through the cache."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from app.core.cache import cache
from app.core.config import Settings
from app.core.db import read_session
from app.core.errors import Forbidden, Unauthorized
from app.core.security import InvalidToken, TokenPurpose, decode_token
from app.users.models import Role
from app.users.schemas import AuthUser
from app.users.service import get_user_by_id_with_cache

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/login", auto_error=False)

MAX_ID = 2**63 - 1


class InvalidAccessToken(Unauthorized):
    """Not authenticated: the access token is missing, invalid or expired."""


class InactiveAccount(Forbidden):
    """This account is deactivated."""


class AdminRequired(Forbidden):
    """Administrator rights are required."""


def _prefetch_contact_key(request: Request, user_id: int) -> str | None:
    """On `/contacts/{contact_id}` routes, the contact's cache key, so that the user and the contact come
    back from the cache in one round trip."""
    raw = request.path_params.get("contact_id")
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 19 and 0 < int(raw) <= MAX_ID:
        return cache.contact_key(int(raw), user_id)
    return None


async def get_current_user(request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]) -> AuthUser:
    """The bearer token's user. It takes no other dependency on purpose (settings come from the app, a session
    only on a cache miss): each dependency FastAPI solves costs every request, and this runs on every one."""
    settings: Settings = request.app.state.settings
    if not token or len(token) > 4096:
        raise InvalidAccessToken
    try:
        claims = decode_token(settings, token, TokenPurpose.access)
    except InvalidToken as exc:
        raise InvalidAccessToken from exc
    user_id = int(claims["sub"])
    keys: list[tuple[str, str | None]] = [(cache.user_key(user_id), None)]
    contact_key = _prefetch_contact_key(request, user_id)
    if contact_key is not None:
        keys.append((contact_key, None))
    prefetched = await cache.prefetch(keys)
    if prefetched is not None and contact_key is not None:
        request.state.prefetched_contact = prefetched[1]
    async with read_session(request) as session:
        user = await get_user_by_id_with_cache(session, user_id, prefetched=prefetched[0] if prefetched else None)
    # A token minted before the password, role or active flag last changed is dead (sessions ended).
    if user is None or claims.get("ver") != user.token_version:
        raise InvalidAccessToken
    if not user.is_active:
        raise InactiveAccount
    return user


CurrentUser = Annotated[AuthUser, Depends(get_current_user)]


async def get_admin_user(user: CurrentUser) -> AuthUser:
    if user.role != Role.admin:
        raise AdminRequired
    return user


AdminUser = Annotated[AuthUser, Depends(get_admin_user)]
