"""What the users feature speaks: accounts as the API shows them, and the account and password requests."""

from __future__ import annotations

from typing import Annotated

import phonenumbers
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictBool, StringConstraints, WithJsonSchema

from app.auth.schemas import AccountView, Role, TokenString
from app.core.schemas import MAX_PASSWORD_BYTES, Email, Password, StrictModel


class UserCreate(StrictModel):
    email: Email
    password: Password


class UserRead(AccountView):
    """A user as the API shows it (the fields of auth's AccountView): never the password hash."""


def _region(value: str) -> str:
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("must be an ISO 3166 alpha-2 region with a telephone numbering plan, e.g. US, GB, FR")
    return value


# The schema lists exactly the regions accepted (upper case, as ISO 3166 writes them), so that a client can offer
# them as a choice and nothing the schema allows is refused.
Region = Annotated[
    str,
    AfterValidator(_region),
    WithJsonSchema({"type": "string", "enum": sorted(phonenumbers.SUPPORTED_REGIONS)}),
]


class UserSettingsUpdate(StrictModel):
    """Your own settings: `default_region`, the region your contacts' national phone numbers (written without a
    leading +) are read in; null falls back to the server's DEFAULT_PHONE_REGION. Numbers already stored keep
    their E.164 form."""

    default_region: Region | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{"default_region": "US"}]})


class UserSettingsRead(UserRead):
    default_region: str | None


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
