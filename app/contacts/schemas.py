"""What the contacts feature speaks: the create, update and read shapes of a contact, with their checks."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from app.core.schemas import Email, StrictModel, storable


def _strip(value: str) -> str:
    return value.strip()


# Every character that Python's str.strip(), JSON Schema (ECMAScript) or pydantic-core (Rust) counts as whitespace,
# listed: their `\s` differ (\x1c-\x1f, \x85, \ufeff), a list means the same to all three.
NOT_ONLY_WHITESPACE = r"[^\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"

# Length and pattern constraints apply to the text as sent, as the OpenAPI schema says; surrounding whitespace is
# then removed before storing. A first name needs one character that is not whitespace (as listed above).
FirstName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=NOT_ONLY_WHITESPACE),
    AfterValidator(storable),
    AfterValidator(_strip),
]
LastName = Annotated[str, StringConstraints(max_length=100), AfterValidator(storable), AfterValidator(_strip)]
# Digits with the usual separators, optionally "+" and "(" first, ending with a digit or ")", an optional extension;
# spaces or tabs around it are allowed and removed.
Phone = Annotated[
    str,
    StringConstraints(
        min_length=3,
        max_length=50,
        pattern=r"^[ \t]*\+?\(?[0-9][0-9 ()./\-]*[0-9)](?: ?(?:x|ext\.?) ?[0-9]+)?[ \t]*$",
    ),
    AfterValidator(_strip),
]
Notes = Annotated[str, StringConstraints(max_length=2000), AfterValidator(storable)]
SearchQuery = Annotated[str, StringConstraints(max_length=100), AfterValidator(storable), AfterValidator(_strip)]

EARLIEST_BIRTHDAY = date(1800, 1, 1)


def _past_birthday(value: date | None) -> date | None:
    if value is not None and not (EARLIEST_BIRTHDAY <= value <= date.today()):
        raise ValueError(f"must be between {EARLIEST_BIRTHDAY.isoformat()} and today")
    return value


def _iso_date_only(value: object) -> object:
    """Only what the schema says a date is, `YYYY-MM-DD`: pydantic would otherwise also take numbers and numeric
    strings as Unix timestamps (1.5e-222 becoming 1970-01-01)."""
    if isinstance(value, date) or (isinstance(value, str) and _ISO_DATE.fullmatch(value)):
        return value
    raise ValueError("must be a date written YYYY-MM-DD")


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
Birthday = Annotated[date, BeforeValidator(_iso_date_only), AfterValidator(_past_birthday)]


class ContactCreate(StrictModel):
    """A new contact (also the full replacement body of PUT)."""

    first_name: FirstName
    last_name: LastName | None = None
    email: Email | None = None
    phone: Phone | None = None
    birthday: Birthday | None = None
    notes: Notes | None = None


class ContactUpdate(StrictModel):
    """A partial update: only the fields sent change. first_name may be changed but not cleared."""

    # Optional but never null: the schema says string only; an explicit null is refused by the validator below.
    first_name: FirstName | SkipJsonSchema[None] = None
    last_name: LastName | None = None
    email: Email | None = None
    phone: Phone | None = None
    birthday: Birthday | None = None
    notes: Notes | None = None

    @field_validator("first_name")
    @classmethod
    def _first_name_not_null(cls, value: str | None) -> str:
        # Runs only when first_name is sent (defaults are not validated): absent is fine, null is not.
        if value is None:
            raise ValueError("first_name cannot be null")
        return value


class ContactRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    first_name: str
    last_name: str | None
    email: str | None
    phone: str | None
    birthday: date | None
    notes: str | None
    created_at: datetime
    updated_at: datetime
