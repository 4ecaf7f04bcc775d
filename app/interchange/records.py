"""A contact as a file carries it (a `Record`: the contact's fields as plain data, its uid, the vCard properties the
API does not show), brought to what the contacts table can hold, or refused with a reason a person can read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from app.contacts.entries import MAX_ENTRIES, MAX_LABELS, spell_label

# Column widths of the contacts table (app/contacts/models.py) and the API's limits.
TEXT_LIMITS = {
    "first_name": 100,
    "middle_name": 100,
    "last_name": 100,
    "prefix": 50,
    "suffix": 50,
    "nickname": 100,
    "organization": 200,
    "job_title": 200,
    "notes": 2000,
}
ENTRY_LIMITS = {"value": 2000, "street": 500, "locality": 200, "region": 200, "postal_code": 50, "country": 100}
EMAIL_LIMIT, PHONE_LIMIT, LABEL_LIMIT, ENTRY_LABEL_LIMIT, UID_LIMIT = 320, 50, 100, 50, 255
LIST_FIELDS = ("emails", "phones", "addresses", "urls")
# Every field an import writes (the API's fields and the uid; the vCard extras apart).
FIELDS = (*TEXT_LIMITS, *LIST_FIELDS, "labels", "favorite", "birthday", "anniversary")


class Refused(Exception):
    """A record that cannot be stored, with the reason the report gives."""


@dataclass
class Record:
    """One contact read from a file: `fields` (the API's names; lists of entry dicts), `uid` if the file gives
    one, and `extra`: what the vCard held that the API does not show (kept in `vcard_extra`)."""

    fields: dict[str, Any] = field(default_factory=dict)
    uid: str | None = None
    extra: dict[str, Any] | None = None


def clean_text(value: str | None) -> str | None:
    """Text as stored: no NUL, no lone surrogates, trimmed; blank is None."""
    if value is None:
        return None
    value = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8").strip()
    return value or None


def _check_length(name: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise Refused(f"{name} is {len(value)} characters long; at most {limit} fit")


def _entry_label(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    spelled = spell_label(clean_text(value) or "")
    return spelled[:ENTRY_LABEL_LIMIT] or None


def _entries(name: str, entries: list[dict[str, Any]], value_limit: int) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in entries:
        cleaned = {key: clean_text(value) if isinstance(value, str) else value for key, value in entry.items()}
        cleaned["label"] = _entry_label(entry.get("label"))
        cleaned["primary"] = bool(entry.get("primary"))
        if name == "addresses":
            parts = [cleaned.get(part) for part in ("street", "locality", "region", "postal_code", "country")]
            if not any(parts):
                continue
            for part in ("street", "locality", "region", "postal_code", "country"):
                _check_length(f"an address's {part}", cleaned.get(part), ENTRY_LIMITS[part])
            identity = repr(parts).lower()
        else:
            value = cleaned.get("value")
            if not value:
                continue
            _check_length(f"a value of {name}", value, value_limit)
            identity = value.lower() if name == "emails" else value
        if identity in seen:
            continue  # the same value twice: kept once
        seen.add(identity)
        kept.append(cleaned)
    if len(kept) > MAX_ENTRIES:
        raise Refused(f"{len(kept)} {name}; a contact holds at most {MAX_ENTRIES}")
    primaries = [entry for entry in kept if entry["primary"]]
    for entry in primaries[1:]:
        entry["primary"] = False
    if kept and not primaries and name != "urls":
        kept[0]["primary"] = True
    if name == "urls":
        for entry in kept:
            entry.pop("primary", None)
    return kept


def normalise(record: Record) -> Record:
    """The record as the contacts table can hold it, or Refused. A record needs a name: the first name, else the
    first of the other names, the organisation, an email or a phone is taken as its first name."""
    fields = record.fields
    for name, limit in TEXT_LIMITS.items():
        fields[name] = clean_text(fields.get(name))
        _check_length(name, fields[name], limit)
    limits = {"emails": EMAIL_LIMIT, "phones": PHONE_LIMIT, "urls": ENTRY_LIMITS["value"], "addresses": 0}
    for name in LIST_FIELDS:
        fields[name] = _entries(name, list(fields.get(name) or []), limits[name])
    labels = [spell_label(clean_text(label) or "") for label in fields.get("labels") or []]
    fields["labels"] = list(dict.fromkeys(label for label in labels if label))
    for label in fields["labels"]:
        _check_length("a label", label, LABEL_LIMIT)
    if len(fields["labels"]) > MAX_LABELS:
        raise Refused(f"{len(fields['labels'])} labels; a contact holds at most {MAX_LABELS}")
    fields["favorite"] = bool(fields.get("favorite"))
    for name in ("birthday", "anniversary"):
        value = fields.get(name)
        fields[name] = value if isinstance(value, date) else None
    if not fields["first_name"]:
        stand_in = next(
            (
                value
                for value in (
                    fields["last_name"],
                    fields["middle_name"],
                    fields["nickname"],
                    fields["organization"],
                    *(entry["value"] for entry in fields["emails"]),
                    *(entry["value"] for entry in fields["phones"]),
                )
                if value
            ),
            None,
        )
        if stand_in is None:
            raise Refused("the record has no name, organisation, email or phone")
        if stand_in == fields["last_name"]:
            fields["last_name"] = None
        fields["first_name"] = stand_in[: TEXT_LIMITS["first_name"]]
    record.uid = clean_text(record.uid)
    if record.uid is not None and (len(record.uid) > UID_LIMIT or not record.uid.isprintable()):
        raise Refused(f"the UID is not a printable text of at most {UID_LIMIT} characters")
    return record


def parse_date(value: str | None) -> date | None:
    """A birthday or anniversary as vCard (19851210, 1985-12-10, --1210 with no year: not stored) or a CSV
    (1985-12-10, 12/10/1985 US order as Outlook writes it) gives it; anything else is None."""
    text = (value or "").strip()
    if not text or text.startswith("--"):
        return None
    text = text.split("T", 1)[0]
    try:
        if len(text) == 8 and text.isdigit():
            return date(int(text[:4]), int(text[4:6]), int(text[6:]))
        if "/" in text:
            month, day, year = (int(part) for part in text.split("/"))
            return date(year, month, day)
        return date.fromisoformat(text[:10])
    except ValueError:
        return None
