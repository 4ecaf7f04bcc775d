"""Shared schema pieces: safe strings, e-mail addresses, passwords and the page envelope."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, EmailStr, Field, StringConstraints

MAX_PASSWORD_BYTES = 1024
MAX_EMAIL_LENGTH = 320


def storable(value: str) -> str:
    """Refuse what no database column can hold: NUL bytes and lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text") from exc
    return value


def _email_length(value: object) -> object:
    if isinstance(value, str):
        if len(value) > MAX_EMAIL_LENGTH:
            raise ValueError(f"must be at most {MAX_EMAIL_LENGTH} characters")
        storable(value)
    return value


def password_bytes(value: str) -> str:
    if len(value.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ValueError(f"must be at most {MAX_PASSWORD_BYTES} bytes")
    return value


Email = Annotated[EmailStr, BeforeValidator(_email_length)]
# Passwords are not stripped: every character counts. Length is checked before any hashing happens.
Password = Annotated[
    str,
    StringConstraints(min_length=8, max_length=MAX_PASSWORD_BYTES),
    AfterValidator(storable),
    AfterValidator(password_bytes),
]

MAX_PAGE_SIZE = 100
MAX_SKIP = 1_000_000
# Ids are 64-bit signed integers on every database: the largest one any route accepts.
MAX_ID = 2**63 - 1


class StrictModel(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(ge=0)
    skip: int = Field(ge=0)
    limit: int = Field(ge=1, le=MAX_PAGE_SIZE)
