from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from app.core.schemas import (
    MAX_EMAIL_LENGTH,
    MAX_PASSWORD_BYTES,
    Email,
    Password,
    StrictModel,
    password_bytes,
    storable,
)

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


class EmailRequest(StrictModel):
    email: Email


class ResetPasswordRequest(StrictModel):
    token: TokenString
    new_password: Password


class ChangePasswordRequest(StrictModel):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PASSWORD_BYTES)]
    new_password: Password


class Message(BaseModel):
    detail: str
