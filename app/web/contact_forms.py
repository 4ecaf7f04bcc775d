"""The contact form: what the page's fields become (the contacts feature's own ContactCreate/ContactUpdate, so that
every rule stays there), the rows it shows back, and where each refusal is written beside its field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from app.contacts.schemas import ContactCreate, ContactUpdate

# The fields of a row of each multi-value group, as the form names them: `phones-2-value`.
GROUPS: dict[str, tuple[str, ...]] = {
    "emails": ("value", "label"),
    "phones": ("value", "label"),
    "addresses": ("street", "locality", "region", "postal_code", "country", "label"),
}
SINGLE = ("first_name", "last_name", "nickname", "organization", "job_title", "birthday", "notes")
MAX_ROWS = 25
EMPTY_ROWS = {"emails": 2, "phones": 2, "addresses": 1}  # blank rows to fill without JavaScript

LABELS = {
    "first_name": "First name",
    "last_name": "Last name",
    "nickname": "Nickname",
    "organization": "Organisation",
    "job_title": "Job title",
    "birthday": "Birthday",
    "notes": "Notes",
    "labels": "Labels",
    "emails": "Email",
    "phones": "Phone",
    "addresses": "Address",
}
ENTRY_WORDS = {
    "value": "",
    "label": "kind",
    "street": "street",
    "locality": "city",
    "region": "region",
    "postal_code": "postal code",
    "country": "country",
}


@dataclass
class ContactForm:
    """What the page shows: the values typed (or stored), the rows of each group, the refusals by field name."""

    values: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    etag: str = ""


def _text(form: FormData, name: str, limit: int = 2100) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def from_contact(contact: dict[str, Any]) -> ContactForm:
    """The form of a stored contact, with blank rows to add entries without JavaScript."""
    values = {name: contact.get(name) or "" for name in SINGLE}
    values["labels"] = ", ".join(contact.get("labels") or [])
    values["favorite"] = bool(contact.get("favorite"))
    rows = {
        group: [{part: entry.get(part) or "" for part in parts} for entry in contact.get(group) or []]
        for group, parts in GROUPS.items()
    }
    return with_blank_rows(ContactForm(values=values, rows=rows, etag=str(contact.get("etag") or "")))


def with_blank_rows(form: ContactForm, more: str | None = None) -> ContactForm:
    for group, parts in GROUPS.items():
        rows = form.rows.setdefault(group, [])
        filled = [row for row in rows if any(value.strip() for value in row.values())]
        blank = EMPTY_ROWS[group] + (1 if more == group else 0)
        form.rows[group] = (filled + [dict.fromkeys(parts, "") for _ in range(blank)])[:MAX_ROWS]
    return form


def read_form(posted: FormData) -> tuple[ContactForm, dict[str, list[int]]]:
    """The posted form as typed, and for each group which row each kept entry came from (blank rows and rows
    marked for removal are left out, as the model leaves out blank addresses)."""
    form = ContactForm(etag=_text(posted, "etag", 100))
    form.values = {name: _text(posted, name) for name in SINGLE}
    form.values["labels"] = _text(posted, "labels")
    form.values["favorite"] = posted.get("favorite") == "on"
    kept: dict[str, list[int]] = {}
    for group, parts in GROUPS.items():
        rows: list[dict[str, str]] = []
        origin: list[int] = []
        for index in range(MAX_ROWS):
            row = {part: _text(posted, f"{group}-{index}-{part}", 600) for part in parts}
            if not any(f"{group}-{index}-{part}" in posted for part in parts):
                continue
            removed = posted.get(f"{group}-{index}-remove") == "on"
            if not removed and any(value.strip() for value in row.values()):
                origin.append(len(rows))
                rows.append(row)
        form.rows[group] = rows
        kept[group] = origin
    return form, kept


def _fields(form: ContactForm, kept: dict[str, list[int]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in SINGLE:
        value = str(form.values.get(name) or "").strip()
        data[name] = value or None
    data["first_name"] = str(form.values.get("first_name") or "")
    data["labels"] = [label.strip() for label in str(form.values.get("labels") or "").split(",") if label.strip()]
    data["favorite"] = bool(form.values.get("favorite"))
    for group, parts in GROUPS.items():
        entries = []
        for index in kept[group]:
            row = form.rows[group][index]
            entry = {part: row[part].strip() or None for part in parts}
            if group != "addresses" and entry["value"] is None:
                entry["value"] = ""
            entries.append({key: value for key, value in entry.items() if value is not None or key == "value"})
        data[group] = entries
    return data


def to_create(form: ContactForm, kept: dict[str, list[int]]) -> ContactCreate | None:
    """The contact to create, else None with `form.errors` filled in."""
    try:
        return ContactCreate.model_validate(_fields(form, kept))
    except ValidationError as error:
        form.errors = errors_in_words(error, kept)
        return None


def to_update(form: ContactForm, kept: dict[str, list[int]]) -> ContactUpdate | None:
    """The change (only the form's fields: what it does not show, such as URLs or the anniversary, is kept)."""
    try:
        return ContactUpdate.model_validate(_fields(form, kept))
    except ValidationError as error:
        form.errors = errors_in_words(error, kept)
        return None


def errors_in_words(error: ValidationError, kept: dict[str, list[int]]) -> dict[str, str]:
    """Each refusal as a sentence, under the form's name of its field (`phones-1-value`, `birthday`, `form`)."""
    found: dict[str, str] = {}
    for item in error.errors():
        loc = [part for part in item["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
        message = str(item.get("msg", "")).removeprefix("Value error, ")
        kind = item["type"]
        if not loc:
            found.setdefault("form", message[:1].upper() + message[1:] + ".")
            continue
        name = str(loc[0])
        label = LABELS.get(name, name.replace("_", " ").capitalize())
        if name in GROUPS and len(loc) >= 2 and isinstance(loc[1], int) and loc[1] < len(kept[name]):
            row = kept[name][loc[1]]
            part = str(loc[2]) if len(loc) > 2 else "value"
            key = f"{name}-{row}-{part}"
            label = f"{label} {ENTRY_WORDS.get(part, part)}".strip()
        elif name in GROUPS:
            key = name
        else:
            key = name
        found.setdefault(key, _sentence(label, kind, message, item.get("ctx") or {}))
    return found


def _sentence(label: str, kind: str, message: str, context: dict[str, Any]) -> str:
    if kind == "string_too_short" and label == "First name":
        return "Enter a first name."
    if kind == "string_too_short":
        return f"{label} must be at least {context.get('min_length')} characters long."
    if kind == "string_too_long":
        return f"{label} must be at most {context.get('max_length')} characters long."
    if kind == "string_pattern_mismatch" and label.startswith("Phone"):
        return "Enter a phone number with digits, such as +1 555 0100 or 020 7946 0958."
    if kind == "string_pattern_mismatch" and label == "First name":
        return "Enter a first name."
    if "email" in message.lower() and label.startswith("Email"):
        return "Enter an email address like name@example.com."
    if kind.startswith("date") or "YYYY-MM-DD" in message:
        return f"{label} must be a date, written YYYY-MM-DD."
    return f"{label}: {message[:1].lower()}{message[1:]}." if message else f"{label} is not valid."
