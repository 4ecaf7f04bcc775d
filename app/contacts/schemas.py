"""What the contacts feature speaks: the create, replace, update and read shapes of a contact, with their checks;
the page of a list; labels."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from app.contacts.entries import (
    AddressEntry,
    Addresses,
    AddressRead,
    EmailEntry,
    EmailRead,
    Emails,
    GroupLabel,
    Labels,
    Phone,
    PhoneEntry,
    PhoneRead,
    Phones,
    UrlRead,
    Urls,
)
from app.core.schemas import MAX_PAGE_SIZE, Email, StrictModel, storable


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
Affix = Annotated[str, StringConstraints(max_length=50), AfterValidator(storable), AfterValidator(_strip)]
Title = Annotated[str, StringConstraints(max_length=200), AfterValidator(storable), AfterValidator(_strip)]
Uid = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$"), AfterValidator(storable)
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


def _not_too_early(value: date) -> date:
    if value < EARLIEST_BIRTHDAY:
        raise ValueError(f"must be {EARLIEST_BIRTHDAY.isoformat()} or later")
    return value


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
Birthday = Annotated[date, BeforeValidator(_iso_date_only), AfterValidator(_past_birthday)]
Anniversary = Annotated[date, BeforeValidator(_iso_date_only), AfterValidator(_not_too_early)]


class _ContactFields(StrictModel):
    """Every field a client writes. `email` and `phone` are the primary entries of `emails` and `phones` (v1
    clients keep using them); sent together with the list, they must agree with its primary entry."""

    first_name: FirstName
    middle_name: LastName | None = None
    last_name: LastName | None = None
    prefix: Affix | None = None
    suffix: Affix | None = None
    nickname: LastName | None = None
    organization: Title | None = None
    job_title: Title | None = None
    email: Email | None = None
    phone: Phone | None = None
    emails: Emails = Field(default_factory=list)
    phones: Phones = Field(default_factory=list)
    addresses: Addresses = Field(default_factory=list)
    urls: Urls = Field(default_factory=list)
    labels: Labels = Field(default_factory=list)
    favorite: StrictBool = False
    birthday: Birthday | None = None
    anniversary: Anniversary | None = None
    notes: Notes | None = None

    @model_validator(mode="after")
    def _primary_agrees(self) -> _ContactFields:
        check_primary_agrees(self)
        return self


def check_primary_agrees(body: BaseModel) -> None:
    sent = body.model_fields_set
    for single, plural in (("email", "emails"), ("phone", "phones")):
        if single in sent and plural in sent:
            value, entries = getattr(body, single), getattr(body, plural)
            primary = next((entry.value for entry in entries if entry.primary), None)
            if (value or "").lower() != (primary or "").lower():
                raise ValueError(f"{single} must be the value of the primary entry of {plural}, or be left out")


class ContactReplace(_ContactFields):
    """The full replacement body of PUT: every field the API exposes is replaced, and one left out becomes empty
    (a v1 body with only `email`/`phone` leaves exactly those as the only entries). `uid` is not changed by PUT."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "organization": "Analytical Engines Ltd",
                    "emails": [
                        {"value": "ada@example.com", "label": "work", "primary": True},
                        {"value": "ada@home.example", "label": "home"},
                    ],
                    "phones": [{"value": "+44 20 7946 0958", "label": "mobile"}],
                    "labels": ["family"],
                    "favorite": True,
                    "birthday": "1815-12-10",
                }
            ]
        }
    )


class ContactCreate(ContactReplace):
    """A new contact. `uid` is the contact's stable identity (vCard and CardDAV use it): a UUID is made when none
    is sent; it must be unique within your address book."""

    uid: Uid | None = None


class ContactUpdate(StrictModel):
    """A partial update: only the fields sent change. `email`/`phone` alone change the primary entry (null removes
    it); a list replaces the whole list. first_name and the lists may be changed but not set to null."""

    # Optional but never null: the schema says string (or list, or boolean) only; an explicit null is refused below.
    first_name: FirstName | SkipJsonSchema[None] = None
    middle_name: LastName | None = None
    last_name: LastName | None = None
    prefix: Affix | None = None
    suffix: Affix | None = None
    nickname: LastName | None = None
    organization: Title | None = None
    job_title: Title | None = None
    email: Email | None = None
    phone: Phone | None = None
    emails: Emails | SkipJsonSchema[None] = None
    phones: Phones | SkipJsonSchema[None] = None
    addresses: Addresses | SkipJsonSchema[None] = None
    urls: Urls | SkipJsonSchema[None] = None
    labels: Labels | SkipJsonSchema[None] = None
    favorite: StrictBool | SkipJsonSchema[None] = None
    birthday: Birthday | None = None
    anniversary: Anniversary | None = None
    notes: Notes | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "ada@example.com"}, {"labels": ["work"]}]})

    @field_validator("first_name", "emails", "phones", "addresses", "urls", "labels", "favorite")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Runs only when the field is sent (defaults are not validated): absent is fine, null is not.
        if value is None:
            raise ValueError("cannot be null")
        return value

    @model_validator(mode="after")
    def _primary_agrees(self) -> ContactUpdate:
        check_primary_agrees(self)
        return self


def etag_of(contact_id: int, version: int) -> str:
    """The contact's strong ETag: changes with every write of the contact."""
    return f'"{contact_id}-{version}"'


class ContactRead(BaseModel):
    """A contact as the API shows it. `email`/`phone` are the primary entries' values; `etag` changes with every
    write (send it back in `If-Match` to update only the version you read)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    uid: str
    first_name: str
    middle_name: str | None
    last_name: str | None
    prefix: str | None
    suffix: str | None
    nickname: str | None
    organization: str | None
    job_title: str | None
    email: str | None
    phone: str | None
    emails: list[EmailRead]
    phones: list[PhoneRead]
    addresses: list[AddressRead]
    urls: list[UrlRead]
    labels: list[str]
    favorite: bool
    birthday: date | None
    anniversary: date | None
    notes: str | None
    etag: str
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _with_etag(cls, data: Any) -> Any:
        """A row (or model) carries `version`; the API shows the ETag made of it."""
        if isinstance(data, dict):
            if "etag" in data or "version" not in data:
                return data
            return {**data, "etag": etag_of(data["id"], data["version"])}
        if hasattr(data, "version"):
            values = {name: getattr(data, name) for name in cls.model_fields if name != "etag"}
            return values | {"etag": etag_of(data.id, data.version)}
        return data


def contact_json(row: Any) -> dict[str, Any]:
    """A contact (a row, or a model) as the API shows it, as JSON-able data."""
    return ContactRead.model_validate(row).model_dump(mode="json")


class ContactPage(BaseModel):
    """A page of contacts: `total` matching contacts, the page's `skip` and `limit`, and `next_cursor`, which
    continues the list after this page in the same order (null on the last page)."""

    items: list[ContactRead]
    total: int = Field(ge=0)
    skip: int = Field(ge=0)
    limit: int = Field(ge=1, le=MAX_PAGE_SIZE)
    next_cursor: str | None = None


class LabelCount(BaseModel):
    name: str
    contacts: int = Field(description="How many of your contacts (trash excluded) carry the label")


class LabelList(BaseModel):
    labels: list[LabelCount]


class LabelRename(StrictModel):
    name: GroupLabel


__all__ = [
    "AddressEntry",
    "ContactCreate",
    "ContactPage",
    "ContactRead",
    "ContactReplace",
    "ContactUpdate",
    "EmailEntry",
    "GroupLabel",
    "LabelCount",
    "LabelList",
    "LabelRename",
    "PhoneEntry",
    "SearchQuery",
    "contact_json",
    "etag_of",
]
