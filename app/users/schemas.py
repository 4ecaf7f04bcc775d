from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, StrictBool

from app.core.schemas import Email, Password, StrictModel
from app.users.models import Role


class UserCreate(StrictModel):
    email: Email
    password: Password


class UserRead(BaseModel):
    """A user as the API shows it: never the password hash."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    role: Role
    is_active: bool
    is_verified: bool
    avatar_url: str | None
    created_at: datetime


class AuthUser(UserRead):
    """The user as authentication needs it, and as it is cached under `user:{id}` (all fields non-secret)."""

    token_version: int


class AdminUserUpdate(StrictModel):
    """What an administrator may change on another account."""

    role: Role | None = None
    is_active: StrictBool | None = None  # true or false, not "yes" or 1
