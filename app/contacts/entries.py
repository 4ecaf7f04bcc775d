"""The multi-value fields of a contact: typed emails, phones, addresses and urls, group labels, one primary entry per
list, label spellings, E.164 phone numbers, and how v1's single `email`/`phone` map onto the lists."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any

import phonenumbers
from pydantic import AfterValidator, BaseModel, Field, StrictBool, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from app.core.schemas import Email, StrictModel, storable

# The usual labels, spelled one way whatever the case or spacing they come in; a few common synonyms too (vCard's
# "cell" is a mobile). Any other label is kept as written (trimmed, inner whitespace collapsed).
USUAL_LABELS = frozenset(
    {"home", "work", "mobile", "other", "main", "fax", "pager", "school", "personal", "family", "friends"}
)
LABEL_SYNONYMS = {"cell": "mobile", "cellular": "mobile", "business": "work", "office": "work", "private": "personal"}

MAX_ENTRIES = 20
MAX_LABELS = 50


def spell_label(value: str) -> str:
    """One spelling per label: whitespace trimmed and collapsed, the usual ones (and their synonyms) lower-cased."""
    collapsed = " ".join(value.split())
    folded = collapsed.casefold()
    if folded in LABEL_SYNONYMS:
        return LABEL_SYNONYMS[folded]
    return folded if folded in USUAL_LABELS else collapsed


def _entry_label(value: str) -> str | None:
    return spell_label(value) or None


def _group_label(value: str) -> str:
    spelled = spell_label(value)
    if not spelled:
        raise ValueError("a label needs a character that is not whitespace")
    return spelled


def _strip(value: str) -> str:
    return value.strip()


def _blank_is_none(value: str) -> str | None:
    return storable(value).strip() or None


# An entry's label ("work", "home", ...); blank means none.
EntryLabel = Annotated[str, StringConstraints(max_length=50), AfterValidator(storable), AfterValidator(_entry_label)]
# A group label of the contact (`labels`): what `?label=` and `/labels` speak.
GroupLabel = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=r"\S"),
    AfterValidator(storable),
    AfterValidator(_group_label),
]
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
Street = Annotated[str, StringConstraints(max_length=500), AfterValidator(_blank_is_none)]
Locality = Annotated[str, StringConstraints(max_length=200), AfterValidator(_blank_is_none)]
PostalCode = Annotated[str, StringConstraints(max_length=50), AfterValidator(_blank_is_none)]
Country = Annotated[str, StringConstraints(max_length=100), AfterValidator(_blank_is_none)]
Url = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2000, pattern=r"\S"),
    AfterValidator(storable),
    AfterValidator(_strip),
]


class EmailEntry(StrictModel):
    value: Email
    label: EntryLabel | None = None
    primary: StrictBool = False


class PhoneEntry(StrictModel):
    value: Phone
    label: EntryLabel | None = None
    primary: StrictBool = False
    # Computed by the server when the number is written; accepted (so that a contact read can be sent back) and
    # ignored on input.
    e164: SkipJsonSchema[Annotated[str, StringConstraints(max_length=20)] | None] = None


class AddressEntry(StrictModel):
    """A postal address; one with no part filled in (street, locality, region, postal_code, country: blank counts
    as empty) is left out of the contact rather than refused."""

    label: EntryLabel | None = None
    street: Street | None = None
    locality: Locality | None = None
    region: Locality | None = None
    postal_code: PostalCode | None = None
    country: Country | None = None
    primary: StrictBool = False


class UrlEntry(StrictModel):
    value: Url
    label: EntryLabel | None = None


ADDRESS_PARTS = ("street", "locality", "region", "postal_code", "country")


def _one_primary(entries: list[Any]) -> list[Any]:
    """At most one primary entry; when none is marked, the first is the primary."""
    marked = [entry for entry in entries if entry.primary]
    if len(marked) > 1:
        raise ValueError("at most one entry may be primary")
    if entries and not marked:
        entries[0].primary = True
    return entries


def _distinct_emails(entries: list[EmailEntry]) -> list[EmailEntry]:
    seen: set[str] = set()
    for entry in entries:
        if entry.value.lower() in seen:
            raise ValueError(f"{entry.value} is listed twice")
        seen.add(entry.value.lower())
    return entries


def _without_blank_addresses(entries: list[AddressEntry]) -> list[AddressEntry]:
    """An address with no part filled in (a form's empty row) is left out, not refused: there is nothing to keep."""
    return [entry for entry in entries if any(getattr(entry, part) is not None for part in ADDRESS_PARTS)]


def _distinct_labels(labels: list[str]) -> list[str]:
    return list(dict.fromkeys(labels))


Emails = Annotated[
    list[EmailEntry], Field(max_length=MAX_ENTRIES), AfterValidator(_distinct_emails), AfterValidator(_one_primary)
]
Phones = Annotated[list[PhoneEntry], Field(max_length=MAX_ENTRIES), AfterValidator(_one_primary)]
Addresses = Annotated[
    list[AddressEntry],
    Field(max_length=MAX_ENTRIES),
    AfterValidator(_without_blank_addresses),
    AfterValidator(_one_primary),
]
Urls = Annotated[list[UrlEntry], Field(max_length=MAX_ENTRIES)]
Labels = Annotated[list[GroupLabel], Field(max_length=MAX_LABELS), AfterValidator(_distinct_labels)]


# -- read shapes: what is stored, as it is (imports may store what REST would refuse) ----------------------------


class EmailRead(BaseModel):
    value: str
    label: str | None
    primary: bool


class PhoneRead(BaseModel):
    value: str
    e164: str | None
    label: str | None
    primary: bool


class AddressRead(BaseModel):
    label: str | None
    street: str | None
    locality: str | None
    region: str | None
    postal_code: str | None
    country: str | None
    primary: bool


class UrlRead(BaseModel):
    value: str
    label: str | None


# -- the stored lists ---------------------------------------------------------------------------------------------

Entry = dict[str, Any]


def primary_value(entries: Sequence[Entry]) -> str | None:
    for entry in entries:
        if entry.get("primary"):
            return str(entry["value"])
    return None


def with_primary(entries: list[Entry], value: str | None, same: Callable[[str, str], bool]) -> list[Entry]:
    """`entries` after a v1 write of the primary's value: the primary entry takes `value` (keeping its label and
    place), or goes when `value` is None (the next entry becomes primary); an entry equal to `value` is merged."""
    primary = next((entry for entry in entries if entry.get("primary")), None)
    kept = [
        dict(entry) for entry in entries if entry is not primary and (value is None or not same(entry["value"], value))
    ]
    if value is not None:
        place = entries.index(primary) if primary is not None else 0
        replaced: Entry = dict(primary) if primary is not None else {"label": None}
        replaced.update(value=value, primary=True)
        kept.insert(min(place, len(kept)), replaced)
    elif kept:
        kept[0]["primary"] = True
    return kept


def same_email(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def same_phone(a: str, b: str) -> bool:
    return a == b


def e164(value: str, region: str | None) -> str | None:
    """The E.164 form of a valid number (a national one read in `region`), else None: an unparseable number is
    kept as entered, never refused."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def needs_region(phones: Iterable[Entry], previous: Iterable[Entry]) -> bool:
    """Whether a national number (no leading +) is written now, so that the user's region must be read."""
    before = {entry["value"] for entry in previous}
    return any(entry["value"] not in before and not str(entry["value"]).startswith("+") for entry in phones)


def stored_phones(phones: Sequence[Entry], previous: Sequence[Entry], region: str | None) -> list[Entry]:
    """Phones as stored, in the stored key order: `e164` computed for each number written now; a number the
    contact already held keeps the form it was given then (changing the region does not rewrite numbers)."""
    before = {entry["value"]: entry.get("e164") for entry in previous}
    return [
        {
            "value": entry["value"],
            "e164": before[entry["value"]] if entry["value"] in before else e164(entry["value"], region),
            "label": entry.get("label"),
            "primary": bool(entry.get("primary")),
        }
        for entry in phones
    ]


def is_region(value: str) -> bool:
    return value in phonenumbers.SUPPORTED_REGIONS
