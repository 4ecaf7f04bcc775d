"""Who is calling over CardDAV: HTTP Basic with the account's email and one of its app passwords (never the
account password), failed attempts throttled as failed logins are."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request

from app.auth import app_passwords
from app.auth.accounts import accounts_of
from app.auth.schemas import AuthUser
from app.auth.throttle import LoginThrottle
from app.core.config import Settings
from app.core.db import SessionDep
from app.core.rate_limit import rate_limiter, request_ip
from app.dav.xml import DavError

CHALLENGE = {"WWW-Authenticate": 'Basic realm="Contacts API", charset="UTF-8"'}
MAX_CREDENTIALS_LENGTH = 1024


def _credentials(header: str | None) -> tuple[str, str] | None:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic" or not encoded or len(encoded) > MAX_CREDENTIALS_LENGTH:
        return None
    try:
        email, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (email, password) if sep and email else None


async def dav_user(request: Request, session: SessionDep) -> AuthUser:
    """The account behind the Basic credentials; 401 with a Basic challenge otherwise (429 once a network has
    failed too often for that account, as for logins)."""
    credentials = _credentials(request.headers.get("authorization"))
    if credentials is None:
        raise DavError(401, message="Sign in with your email and an app password.", headers=CHALLENGE)
    email, password = credentials
    settings: Settings = request.app.state.settings
    throttle = LoginThrottle(rate_limiter(request), settings, email, request_ip(request))
    await throttle.check()
    user = await app_passwords.authenticate(session, settings, accounts_of(request), email, password)
    if user is None:
        await throttle.failed()
        raise DavError(
            401, message="Wrong email or app password (the account password is not accepted here).", headers=CHALLENGE
        )
    return user


DavUser = Annotated[AuthUser, Depends(dav_user)]
