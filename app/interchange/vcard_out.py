"""A stored contact written as one vCard (4.0, or 3.0 for older clients) with vobject: the API's fields, labels as
CATEGORIES, entry labels as TYPE (or Apple's `itemN.X-ABLabel` for a label no TYPE says), PREF for the primary
entry, and the properties kept from the card that came in (PHOTO, X- properties) as they came."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any, Literal

import vobject
from vobject.base import textLineToContentLine

from app.interchange.vcard_in import line_text

VCardVersion = Literal["4.0", "3.0"]
# Entry labels that a TYPE parameter says; any other label is written as an X-ABLabel of the entry's group.
LABEL_TYPES = {"home": "home", "work": "work", "mobile": "cell", "fax": "fax", "pager": "pager", "main": "main"}
LABEL_TYPES_BY_PROPERTY = {
    "email": {"home", "work"},
    "tel": {"home", "work", "cell", "fax", "pager", "main"},
    "adr": {"home", "work"},
    "url": {"home", "work"},
}


def full_name(contact: Mapping[str, Any]) -> str:
    parts = ("prefix", "first_name", "middle_name", "last_name", "suffix")
    return " ".join(str(contact[part]) for part in parts if contact.get(part)) or str(contact.get("first_name") or "")


def _date(value: date | str | None, version: VCardVersion) -> str | None:
    if value is None:
        return None
    text = value.isoformat() if isinstance(value, date) else str(value)
    return text.replace("-", "") if version == "4.0" else text


class _Groups:
    """Hands out `itemN` group names that no kept line already uses."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken
        self.number = 0

    def next(self) -> str:
        while True:
            self.number += 1
            name = f"item{self.number}"
            if name not in self.taken:
                return name


def _add_entry(
    card: Any,
    prop: str,
    value: str,
    entry: Mapping[str, Any],
    version: VCardVersion,
    groups: _Groups,
) -> Any:
    label = entry.get("label")
    kind = LABEL_TYPES.get(str(label)) if label else None
    types: list[str] = ["internet"] if prop == "email" and version == "3.0" else []
    group = None
    if kind and kind in LABEL_TYPES_BY_PROPERTY[prop]:
        types.append(kind)
    elif label:
        group = groups.next()
    line = card.add(prop, group=group)
    line.value = value
    if entry.get("primary"):
        if version == "4.0":
            line.params["PREF"] = ["1"]
        else:
            types.append("pref")
    if types:
        line.params["TYPE"] = types
    if group is not None:
        card.add("x-ablabel", group=group).value = str(label)
    return line


_BINARY = {"PHOTO": "image", "LOGO": "image", "SOUND": "audio", "KEY": "application"}
_DATA_URI = re.compile(r"^data:([\w.+-]+/([\w.+-]+));base64,(.*)$", re.DOTALL)


def _in_version(text: str, version: VCardVersion) -> Any:
    """A kept line as the version written wants it: an inline PHOTO (LOGO, SOUND, KEY) is `ENCODING=b;TYPE=JPEG`
    in 3.0 and a `data:image/jpeg;base64,` URI in 4.0; every other line as it came."""
    line = textLineToContentLine(text)
    kind = _BINARY.get(line.name)
    if kind is None:
        return line
    encoding = [value.upper() for value in line.params.get("ENCODING", [])]
    if version == "4.0" and encoding in (["B"], ["BASE64"]):
        subtype = (line.params.get("TYPE") or ["jpeg"])[0].lower()
        params = {name: values for name, values in line.params.items() if name not in ("ENCODING", "TYPE")}
        line.params = params
        line.value = f"data:{kind}/{subtype};base64,{str(line.value).replace(' ', '')}"
    elif version == "3.0" and (match := _DATA_URI.match(str(line.value))):
        line.params = {**{n: v for n, v in line.params.items() if n != "MEDIATYPE"}, "ENCODING": ["b"]}
        line.params["TYPE"] = [match.group(2).upper()]
        line.value = match.group(3)
    return textLineToContentLine(line_text(line))


def write_card(contact: Mapping[str, Any], version: VCardVersion = "4.0") -> str:
    """The contact (a row of the contacts table, as a mapping) as a vCard, CRLF line ends, folded at 75 octets."""
    card = vobject.vCard()
    card.add("version").value = version
    extra = contact.get("vcard_extra")
    kept = [_in_version(text, version) for text in extra.get("lines", [])] if isinstance(extra, dict) else []
    groups = _Groups({line.group.lower() for line in kept if line.group})
    card.add("uid").value = str(contact["uid"])
    card.add("fn").value = full_name(contact)
    card.add("n").value = vobject.vcard.Name(
        family=contact.get("last_name") or "",
        given=contact.get("first_name") or "",
        additional=contact.get("middle_name") or "",
        prefix=contact.get("prefix") or "",
        suffix=contact.get("suffix") or "",
    )
    for name, prop in (("nickname", "nickname"), ("job_title", "title"), ("notes", "note")):
        if contact.get(name):
            card.add(prop).value = str(contact[name])
    if contact.get("organization"):
        card.add("org").value = [str(contact["organization"])]
    for entry in contact.get("emails") or []:
        _add_entry(card, "email", str(entry["value"]), entry, version, groups)
    for entry in contact.get("phones") or []:
        _add_entry(card, "tel", str(entry["value"]), entry, version, groups)
    for entry in contact.get("addresses") or []:
        line = _add_entry(card, "adr", "", entry, version, groups)
        line.value = vobject.vcard.Address(
            street=entry.get("street") or "",
            city=entry.get("locality") or "",
            region=entry.get("region") or "",
            code=entry.get("postal_code") or "",
            country=entry.get("country") or "",
        )
    for entry in contact.get("urls") or []:
        _add_entry(card, "url", str(entry["value"]), entry, version, groups)
    birthday = _date(contact.get("birthday"), version)
    if birthday:
        card.add("bday").value = birthday
    anniversary = _date(contact.get("anniversary"), version)
    if anniversary:
        card.add("anniversary" if version == "4.0" else "x-anniversary").value = anniversary
    if contact.get("labels"):
        card.add("categories").value = [str(label) for label in contact["labels"]]
    if contact.get("favorite"):
        card.add("x-contacts-favorite").value = "TRUE"
    for line in kept:
        # As it came (still encoded), without the behaviour vobject would give it: its value is written as it is
        # (a 4.0 data: URI is not text to be split at commas and escaped).
        card.contents.setdefault(line.name.lower(), []).append(line)
    return str(card.serialize())
