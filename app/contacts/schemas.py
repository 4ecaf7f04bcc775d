from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, model_validator

from app.core.schemas import Email, StrictModel, storable

FirstName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(storable)
]
LastName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=100), AfterValidator(storable)]
Phone = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=50, pattern=r"^\+?[0-9][0-9 ()./\-]*(?:(?:x|ext\.?) ?[0-9]+)?$"
    ),
]
Notes = Annotated[str, StringConstraints(max_length=2000), AfterValidator(storable)]
SearchQuery = Annotated[str, StringConstraints(strip_whitespace=True, max_length=100), AfterValidator(storable)]

EARLIEST_BIRTHDAY = date(1800, 1, 1)


def _past_birthday(value: date | None) -> date | None:
    if value is not None and not (EARLIEST_BIRTHDAY <= value <= date.today()):
        raise ValueError(f"must be between {EARLIEST_BIRTHDAY.isoformat()} and today")
    return value


Birthday = Annotated[date, AfterValidator(_past_birthday)]


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

    first_name: FirstName | None = None
    last_name: LastName | None = None
    email: Email | None = None
    phone: Phone | None = None
    birthday: Birthday | None = None
    notes: Notes | None = None

    @model_validator(mode="after")
    def _first_name_not_null(self) -> ContactUpdate:
        if "first_name" in self.model_fields_set and self.first_name is None:
            raise ValueError("first_name cannot be null")
        return self


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


