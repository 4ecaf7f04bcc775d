"""CSV rows read into Records: the layout is told by the header (Google Contacts, old and new; Outlook), or given as
a column mapping with the request. Rows are cut at line ends outside quotes, so a file is read one record at a time
with the standard `csv` module."""

from __future__ import annotations

import csv
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

from app.interchange.csv_out import FORMULA_STARTS, MY_CONTACTS, STARRED, UID_FIELD
from app.interchange.reading import TooLong, decode_text
from app.interchange.records import Record, parse_date

Layout = Literal["google", "outlook", "mapping"]
MAX_COLUMNS = 1000
# What a column of a mapping may name: a field of the contact (emails, phones and urls may be named many times).
MAPPABLE = (
    "uid first_name middle_name last_name prefix suffix nickname organization job_title email phone url street "
    "locality region postal_code country birthday anniversary notes labels"
).split()
# The old Google layout's names for the new one's columns.
_GOOGLE_OLD = {
    "Given Name": "First Name",
    "Additional Name": "Middle Name",
    "Family Name": "Last Name",
    "Group Membership": "Labels",
    "Organization 1 - Name": "Organization Name",
    "Organization 1 - Title": "Organization Title",
}
_GOOGLE_SIMPLE = {
    "First Name": "first_name",
    "Middle Name": "middle_name",
    "Last Name": "last_name",
    "Name Prefix": "prefix",
    "Name Suffix": "suffix",
    "Nickname": "nickname",
    "Organization Name": "organization",
    "Organization Title": "job_title",
    "Notes": "notes",
}
_OUTLOOK_SIMPLE = {
    "First Name": "first_name",
    "Middle Name": "middle_name",
    "Last Name": "last_name",
    "Title": "prefix",
    "Suffix": "suffix",
    "Nickname": "nickname",
    "Company": "organization",
    "Job Title": "job_title",
    "Notes": "notes",
}
_OUTLOOK_PHONES = {
    "Primary Phone": "main",
    "Mobile Phone": "mobile",
    "Home Phone": "home",
    "Home Phone 2": "home",
    "Business Phone": "work",
    "Business Phone 2": "work",
    "Company Main Phone": "main",
    "Home Fax": "fax",
    "Business Fax": "fax",
    "Other Fax": "fax",
    "Pager": "pager",
    "Other Phone": "other",
    "Car Phone": "car",
    "Assistant's Phone": "assistant",
}
_PARTS = ("Street", "City", "PO Box", "Region", "Postal Code", "Country", "Extended Address")
_GOOGLE_SYSTEM_GROUPS = frozenset({MY_CONTACTS, STARRED, "* Other Contacts"})
_GOOGLE_LABEL_GROUPS = frozenset({"* family", "* friends", "* coworkers"})
_NUMBERED = re.compile(r"^(E-mail|Phone|Address|Website|Event|Custom Field|Relation|IM) (\d+) - (.+)$")


def unescape_cell(value: str) -> str:
    """A cell as written before formula escaping: `'=x` is `=x` (what csv_out.escape_cell added)."""
    return value[1:] if value[:1] == "'" and value[1:2].startswith(FORMULA_STARTS) and value[1:2] else value


def detect_layout(columns: Sequence[str]) -> Layout | None:
    names = set(columns)
    if "E-mail 1 - Value" in names or "Phone 1 - Value" in names or "Given Name" in names or "Labels" in names:
        return "google"
    if names & {"E-mail Address", "Business Phone", "Mobile Phone", "Home Street", "Company"}:
        return "outlook"
    return None


def _entry(value: str, label: str | None) -> list[dict[str, Any]]:
    """Google puts several values in one cell with ` ::: `; `* ` before the label marks the primary one."""
    primary = bool(label and label.startswith("* "))
    label = (label or "").removeprefix("* ").strip() or None
    return [
        {"value": part.strip(), "label": label, "primary": primary and n == 0}
        for n, part in enumerate(value.split(" ::: "))
        if part.strip()
    ]


def _google(cells: Mapping[str, str]) -> Record:
    cells = {_GOOGLE_OLD.get(name, name): value for name, value in cells.items()}
    fields: dict[str, Any] = {name: cells.get(column) for column, name in _GOOGLE_SIMPLE.items()}
    fields.update(emails=[], phones=[], addresses=[], urls=[])
    if not fields["first_name"] and cells.get("Name") and not fields["last_name"]:
        fields["first_name"] = cells["Name"]
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for column, value in cells.items():
        match = _NUMBERED.match(column)
        if match:
            kind, number, part = match.groups()
            groups.setdefault((kind, number), {})[part.replace("Type", "Label")] = value
    record = Record(fields=fields)
    for (kind, _), parts in groups.items():
        label, value = parts.get("Label"), parts.get("Value", "")
        if kind in ("E-mail", "Phone", "Website"):
            fields[{"E-mail": "emails", "Phone": "phones", "Website": "urls"}[kind]] += _entry(value, label)
        elif kind == "Address":
            street = "\n".join(p for p in (parts.get("Extended Address"), parts.get("Street")) if p)
            address = {
                "label": (label or "").removeprefix("* ") or None,
                # Only a formatted address (no part given): it is all the street there is.
                "street": street or (parts.get("Formatted") if not any(parts.get(p) for p in _PARTS) else None),
                "locality": parts.get("City"),
                "region": parts.get("Region"),
                "postal_code": parts.get("Postal Code"),
                "country": parts.get("Country"),
                "primary": bool(label and label.startswith("* ")),
            }
            fields["addresses"].append(address)
        elif kind == "Event" and (label or "").strip().lower() == "anniversary":
            fields["anniversary"] = parse_date(value)
        elif kind == "Custom Field" and (label or "").strip() == UID_FIELD:
            record.uid = value or None
    fields["birthday"] = parse_date(cells.get("Birthday"))
    labels = [part.strip() for part in (cells.get("Labels") or "").split(":::") if part.strip()]
    fields["favorite"] = STARRED in labels
    # Google's own groups are written `* name`: myContacts and Other Contacts say nothing, starred is a favourite,
    # its Family, Friends and Coworkers are labels like the user's.
    fields["labels"] = [
        label.removeprefix("* ") if label in _GOOGLE_LABEL_GROUPS else label
        for label in labels
        if label not in _GOOGLE_SYSTEM_GROUPS
    ]
    return record


def _outlook(cells: Mapping[str, str]) -> Record:
    fields: dict[str, Any] = {name: cells.get(column) for column, name in _OUTLOOK_SIMPLE.items()}
    fields["emails"] = [
        {"value": cells[column], "label": None, "primary": n == 0}
        for n, column in enumerate(("E-mail Address", "E-mail 2 Address", "E-mail 3 Address"))
        if cells.get(column)
    ]
    fields["phones"] = [
        {"value": cells[column], "label": label, "primary": False}
        for column, label in _OUTLOOK_PHONES.items()
        if cells.get(column)
    ]
    fields["addresses"] = []
    for prefix, label in (("Home", "home"), ("Business", "work"), ("Other", "other")):
        street = "\n".join(
            cells.get(f"{prefix} Street{n}", "") for n in ("", " 2", " 3") if cells.get(f"{prefix} Street{n}")
        )
        fields["addresses"].append(
            {
                "label": label,
                "street": street,
                "locality": cells.get(f"{prefix} City"),
                "region": cells.get(f"{prefix} State"),
                "postal_code": cells.get(f"{prefix} Postal Code"),
                "country": cells.get(f"{prefix} Country") or cells.get(f"{prefix} Country/Region"),
                "primary": False,
            }
        )
    fields["urls"] = [{"value": cells["Web Page"], "label": None}] if cells.get("Web Page") else []
    fields["birthday"] = parse_date(cells.get("Birthday"))
    fields["anniversary"] = parse_date(cells.get("Anniversary"))
    fields["labels"] = [part.strip() for part in re.split(r"[;,]", cells.get("Categories") or "") if part.strip()]
    return Record(fields=fields)


def _mapped(cells: Mapping[str, str], mapping: Mapping[str, str]) -> Record:
    fields: dict[str, Any] = {"emails": [], "phones": [], "urls": [], "labels": [], "addresses": []}
    address: dict[str, Any] = {"label": None, "primary": True}
    record = Record(fields=fields)
    for column, target in mapping.items():
        value = cells.get(column)
        if not value:
            continue
        if target in ("email", "phone", "url"):
            fields[f"{target}s"].append({"value": value, "label": None, "primary": False})
        elif target in ("street", "locality", "region", "postal_code", "country"):
            address[target] = value
        elif target in ("birthday", "anniversary"):
            fields[target] = parse_date(value)
        elif target == "labels":
            fields["labels"] += [part.strip() for part in re.split(r"[;,]|:::", value) if part.strip()]
        elif target == "uid":
            record.uid = value
        else:
            fields[target] = value
    fields["addresses"] = [address]
    return record


def read_row(layout: Layout, columns: Sequence[str], values: Sequence[str], mapping: Mapping[str, str]) -> Record:
    cells = {column: unescape_cell(value) for column, value in zip(columns, values, strict=False) if value}
    if layout == "google":
        return _google(cells)
    if layout == "outlook":
        return _outlook(cells)
    return _mapped(cells, mapping)


async def csv_records(
    source: AsyncIterator[bytes | TooLong], encoding: str, max_record: int
) -> AsyncIterator[tuple[int, list[str] | str]]:
    """(row number, cells) for each CSV record, the header first as row 0; a record over `max_record` bytes, or
    one the csv module cannot read, comes as (row, reason). A record ends at a line end outside quotes."""
    held: list[bytes] = []
    size = 0
    quotes = 0
    number = 0
    too_long = False
    async for line in source:
        if isinstance(line, TooLong):
            too_long = True
        else:
            size += len(line) + 1
            quotes += line.count(b'"')
            if size > max_record:
                too_long, held = True, []
            elif not too_long:
                held.append(line)
        if quotes % 2:
            continue  # inside a quoted cell: the record goes on
        if too_long:
            yield number, f"the record is larger than the limit of {max_record} bytes"
        elif any(held):
            text = decode_text(b"\n".join(held), encoding)
            try:
                yield number, next(csv.reader([text], strict=True)) if "\n" not in text else _multiline(text)
            except (csv.Error, StopIteration) as exc:
                yield number, f"not a readable CSV record: {exc}"
        else:
            number -= 1  # a blank line is no record
        number += 1
        held, size, quotes, too_long = [], 0, 0, False
    if held or too_long:
        yield number, "the file ends inside a quoted cell"


def _multiline(text: str) -> list[str]:
    rows = list(csv.reader(text.splitlines(keepends=True), strict=True))
    if len(rows) != 1:
        raise csv.Error("a record spans lines outside quotes")
    return rows[0]
