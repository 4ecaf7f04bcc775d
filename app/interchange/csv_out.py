"""Contacts written as CSV in the layout Google Contacts exports and imports (its header, `* ` before the primary
entry's label, ` ::: ` between labels, `* starred` for favourites), with the uid in a custom field so that this
service reads its own export back as the same contacts, and every cell that a spreadsheet would run as a formula
escaped."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NAME_COLUMNS = (
    "First Name",
    "Middle Name",
    "Last Name",
    "Phonetic First Name",
    "Phonetic Middle Name",
    "Phonetic Last Name",
    "Name Prefix",
    "Name Suffix",
    "Nickname",
    "File As",
    "Organization Name",
    "Organization Title",
    "Organization Department",
    "Birthday",
    "Notes",
    "Photo",
    "Labels",
)
ADDRESS_PARTS = ("Formatted", "Street", "City", "PO Box", "Region", "Postal Code", "Country", "Extended Address")
UID_FIELD = "UID"
STARRED = "* starred"
MY_CONTACTS = "* myContacts"
GOOGLE_LABELS = {"mobile": "Mobile", "home": "Home", "work": "Work", "other": "Other", "main": "Main"}


def escape_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: one starting with = + - @ tab or CR gets a leading apostrophe (the
    reader of this service removes it again)."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def header(counts: Mapping[str, int]) -> list[str]:
    """Google's header with as many numbered groups as the widest contact needs (`counts`: the most emails,
    phones, addresses and urls any exported contact has)."""
    columns = list(NAME_COLUMNS)
    for number in range(1, counts.get("emails", 0) + 1):
        columns += [f"E-mail {number} - Label", f"E-mail {number} - Value"]
    for number in range(1, counts.get("phones", 0) + 1):
        columns += [f"Phone {number} - Label", f"Phone {number} - Value"]
    for number in range(1, counts.get("addresses", 0) + 1):
        columns += [f"Address {number} - Label"] + [f"Address {number} - {part}" for part in ADDRESS_PARTS]
    for number in range(1, counts.get("urls", 0) + 1):
        columns += [f"Website {number} - Label", f"Website {number} - Value"]
    columns += ["Event 1 - Label", "Event 1 - Value", "Custom Field 1 - Label", "Custom Field 1 - Value"]
    return columns


def _label(entry: Mapping[str, Any]) -> str:
    label = entry.get("label") or ""
    spelled = GOOGLE_LABELS.get(label, label)
    return f"* {spelled}" if entry.get("primary") else spelled


def _date(value: date | str | None) -> str:
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, date) else str(value)


def row(contact: Mapping[str, Any], columns: Sequence[str]) -> list[str]:
    """One contact as the cells of `columns` (the header above)."""
    cells: dict[str, str] = {
        "First Name": contact.get("first_name") or "",
        "Middle Name": contact.get("middle_name") or "",
        "Last Name": contact.get("last_name") or "",
        "Name Prefix": contact.get("prefix") or "",
        "Name Suffix": contact.get("suffix") or "",
        "Nickname": contact.get("nickname") or "",
        "Organization Name": contact.get("organization") or "",
        "Organization Title": contact.get("job_title") or "",
        "Birthday": _date(contact.get("birthday")),
        "Notes": contact.get("notes") or "",
        "Labels": " ::: ".join(
            [*(contact.get("labels") or []), MY_CONTACTS, *([STARRED] if contact.get("favorite") else [])]
        ),
        "Custom Field 1 - Label": UID_FIELD,
        "Custom Field 1 - Value": str(contact.get("uid") or ""),
    }
    if contact.get("anniversary"):
        cells["Event 1 - Label"], cells["Event 1 - Value"] = "Anniversary", _date(contact["anniversary"])
    for prefix, key in (("E-mail", "emails"), ("Phone", "phones"), ("Website", "urls")):
        for number, entry in enumerate(contact.get(key) or [], start=1):
            cells[f"{prefix} {number} - Label"] = _label(entry)
            cells[f"{prefix} {number} - Value"] = str(entry["value"])
    for number, entry in enumerate(contact.get("addresses") or [], start=1):
        cells[f"Address {number} - Label"] = _label(entry)
        parts = {
            "Street": entry.get("street"),
            "City": entry.get("locality"),
            "Region": entry.get("region"),
            "Postal Code": entry.get("postal_code"),
            "Country": entry.get("country"),
        }
        for part, value in parts.items():
            cells[f"Address {number} - {part}"] = value or ""
        cells[f"Address {number} - Formatted"] = "\n".join(str(value) for value in parts.values() if value)
    return [escape_cell(cells.get(column, "")) for column in columns]


def csv_text(rows: Sequence[Sequence[str]]) -> str:
    """Rows as CSV text (CRLF line ends, quoted where needed)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()
