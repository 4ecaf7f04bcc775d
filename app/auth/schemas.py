"""What the auth feature speaks: roles, the principal (AuthUser), token pairs and the login form."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from app.core.schemas import MAX_EMAIL_LENGTH, MAX_PASSWORD_BYTES, StrictModel, password_bytes, storable


class Role(enum.StrEnum):
    user = "user"
    admin = "admin"


class AccountView(BaseModel):
    """An account as anyone may see it: never the password hash or a token."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    role: Role
    is_active: bool
    is_verified: bool
    avatar_url: str | None
    created_at: datetime


class AuthUser(AccountView):
    """The principal: who is calling, as checks need it, and as it is cached under `user:{id}` (every field
    non-secret)."""

    token_version: int
    # The owner's own setting, shown by GET /users/me; required, so that a cached principal written before the
    # field existed is read again from the database rather than shown without it.
    default_region: str | None


TokenString = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret


class RefreshRequest(StrictModel):
    refresh_token: TokenString


class LoginForm(BaseModel):
    """The OAuth2 password form: `username` is the account's email."""

    username: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_EMAIL_LENGTH),
        AfterValidator(storable),
    ]
    password: Annotated[
        str,
        StringConstraints(min_length=1, max_length=MAX_PASSWORD_BYTES),
        AfterValidator(storable),
        AfterValidator(password_bytes),
    ]
    grant_type: Annotated[str | None, Field(pattern="^password$")] = None
    scope: Annotated[str, StringConstraints(max_length=1000)] = ""


class AppPasswordCreate(StrictModel):
    """A name to know the device or program by (e.g. "Phone", "Thunderbird")."""

    name: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"\S"),
        AfterValidator(storable),
    ]

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "Phone"}]})


class AppPasswordRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None


class AppPasswordCreated(AppPasswordRead):
    password: str = Field(description="The app password, shown this once: type it into the device as its password")
