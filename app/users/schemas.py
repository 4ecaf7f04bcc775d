"""What the users feature speaks: accounts as the API shows them, and the account and password requests."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, StrictBool, StringConstraints

from app.auth.schemas import AccountView, Role, TokenString
from app.core.schemas import MAX_PASSWORD_BYTES, Email, Password, StrictModel


class UserCreate(StrictModel):
    email: Email
    password: Password


class UserRead(AccountView):
    """A user as the API shows it (the fields of auth's AccountView): never the password hash."""


class AdminUserUpdate(StrictModel):
    """What an administrator may change on another account."""

    role: Role | None = None
    is_active: StrictBool | None = None  # true or false, not "yes" or 1


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
