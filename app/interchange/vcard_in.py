"""One vCard (2.1, 3.0 or 4.0) read into a Record with vobject: names, emails, phones, addresses, urls, dates, notes,
CATEGORIES as labels, Apple's `itemN.X-ABLabel` custom labels, PREF; every other property (PHOTO, X- properties,
anything unknown) kept as a vCard line in the record's extra, to be written out again as it came."""

from __future__ import annotations

import base64
import re
from typing import Any

import vobject
from vobject.base import ContentLine, backslashEscape

from app.interchange.reading import decode_text
from app.interchange.records import Record, Refused, parse_date

# What each TYPE says as an entry label; TYPEs that say nothing about the entry (its kind of value) are ignored.
TYPE_LABELS = {
    "home": "home",
    "work": "work",
    "cell": "mobile",
    "mobile": "mobile",
    "iphone": "iPhone",
    "main": "main",
    "fax": "fax",
    "pager": "pager",
    "other": "other",
    "school": "school",
}
NOT_LABELS = frozenset({"internet", "voice", "pref", "x400", "text", "video", "msg", "bbs", "modem", "car", "isdn"})
# Properties this service writes from the contact's fields (or regenerates): not kept in the extra.
MAPPED = frozenset(
    {"VERSION", "UID", "FN", "N", "NICKNAME", "ORG", "TITLE", "EMAIL", "TEL", "ADR", "URL", "BDAY", "ANNIVERSARY"}
    | {"NOTE", "CATEGORIES", "PRODID", "REV", "X-CONTACTS-FAVORITE"}
)
URI_PROPERTIES = frozenset({"PHOTO", "LOGO", "SOUND", "KEY", "MEMBER", "RELATED", "IMPP", "GEO", "SOURCE", "FBURL"})
_APPLE_LABEL = re.compile(r"^_\$!<(.*)>!\$_$")
_CHARSET = re.compile(rb";CHARSET=([A-Za-z0-9_.:-]+)", re.IGNORECASE)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(_text(item) for item in value if item)
    return str(value or "").strip()


def _types(line: ContentLine) -> list[str]:
    """Every TYPE of a line, lower-cased: TYPE=a,b and TYPE="a,b" (4.0), repeated TYPE=, 2.1's bare parameters."""
    found = [*line.params.get("TYPE", []), *line.singletonparams]
    return [part.strip().lower() for value in found for part in str(value).split(",") if part.strip()]


def _is_preferred(line: ContentLine, types: list[str]) -> bool:
    return "pref" in types or bool(line.params.get("PREF"))


def _label(line: ContentLine, types: list[str], custom: dict[str, str]) -> str | None:
    if line.group and line.group.lower() in custom:
        return custom[line.group.lower()]
    kinds = [TYPE_LABELS.get(kind, kind.removeprefix("x-")) for kind in types if kind not in NOT_LABELS]
    if "fax" in kinds:
        return "fax"
    return kinds[0] if kinds else None


def _custom_labels(card: Any) -> dict[str, str]:
    """Apple's labels: `item1.X-ABLabel:Label` names the label of every other `item1.` line (`_$!<Other>!$_` is
    Apple's spelling of its own labels)."""
    labels: dict[str, str] = {}
    for line in card.contents.get("x-ablabel", []):
        if line.group:
            text = _text(line.value)
            match = _APPLE_LABEL.match(text)
            labels[line.group.lower()] = match.group(1).lower() if match else text
    return labels


def line_text(line: ContentLine) -> str:
    """A parsed line written out again as one (unfolded) vCard 3.0/4.0 line: 2.1's bare parameters become TYPE,
    quoted-printable and CHARSET are gone (the value is decoded text now), binary values are base64 (ENCODING=b)."""
    params: dict[str, list[str]] = {name: list(values) for name, values in line.params.items() if name != "CHARSET"}
    singles = [value for value in line.singletonparams if value.upper() not in ("BASE64", "QUOTED-PRINTABLE", "B")]
    if singles:
        params.setdefault("TYPE", []).extend(singles)
    value = line.value
    if isinstance(value, bytes):
        params["ENCODING"] = ["b"]
        text = base64.b64encode(value).decode("ascii")
    elif isinstance(value, list):
        text = ",".join(backslashEscape(str(item)) for item in value)
    elif params.get("ENCODING", [""])[0].upper() in ("B", "BASE64") or (
        line.name in URI_PROPERTIES and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", str(value))
    ):
        text = str(value)
    else:
        text = backslashEscape(str(value))
    if params.get("ENCODING", [""])[0].upper() == "BASE64":
        params["ENCODING"] = ["b"]
    rendered = "".join(f";{name}={','.join(_quoted(v) for v in values)}" for name, values in params.items())
    group = f"{line.group}." if line.group else ""
    return f"{group}{line.name}{rendered}:{text}"


def _quoted(value: str) -> str:
    value = value.replace('"', "'")
    return f'"{value}"' if any(char in value for char in ",;:") else value


_VERSION_21 = re.compile(r"^VERSION:\s*2\.1\s*$", re.IGNORECASE | re.MULTILINE)
_PROPERTY_START = re.compile(r"^([A-Za-z0-9-]+\.)?([A-Za-z0-9-]+)[;:]")
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


def _escape_commas_21(text: str) -> str:
    """vCard 2.1 does not escape commas in values, 3.0 (whose rules vobject reads with) cuts a value at one: escape
    them, in every value but CATEGORIES' (a list), continuation lines included."""
    out: list[str] = []
    listed = False
    for line in text.split("\n"):
        start = _PROPERTY_START.match(line)
        if start and not line[:1].isspace():
            listed = start.group(2).upper() == "CATEGORIES"
            head, colon, value = line.partition(":")
            out.append(head + colon + (value if listed else _UNESCAPED_COMMA.sub(r"\\,", value)))
        else:
            out.append(line if listed else _UNESCAPED_COMMA.sub(r"\\,", line))
    return "\n".join(out)


_URI_START = re.compile(r"^([A-Za-z0-9-]+\.)?(" + "|".join(sorted(URI_PROPERTIES)) + r")[;:]", re.IGNORECASE)


def _value_start(line: str) -> int:
    """Where a property line's value starts: after the first colon outside double quotes."""
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == ":" and not quoted:
            return index + 1
    return len(line)


def _protect_uris(text: str) -> str:
    """A URI value (a 4.0 `PHOTO:data:image/jpeg;base64,...`) holds commas and semicolons that vobject, reading
    it as 3.0 text, would cut it at: escape them, so that what it decodes is the URI as it came."""
    out = []
    for line in text.split("\n"):
        if _URI_START.match(line):
            start = _value_start(line)
            line = line[:start] + re.sub(r"(?<!\\)([,;])", r"\\\1", line[start:])
        out.append(line)
    return "\n".join(out)


def _parse(raw: bytes) -> Any:
    charset = _CHARSET.search(raw)
    text = decode_text(raw, charset.group(1).decode("ascii") if charset else None)
    if _VERSION_21.search(text):
        text = _escape_commas_21(text)
    text = _protect_uris(text)
    try:
        return vobject.readOne(text, allowQP=True, ignoreUnreadable=True)
    except Exception as exc:  # vobject raises many kinds for a broken card; each is this card's refusal
        raise Refused(f"not a readable vCard: {str(exc)[:200] or exc.__class__.__name__}") from exc


def read_card(raw: bytes) -> Record:
    """A card's bytes (one BEGIN:VCARD..END:VCARD) as a Record; Refused when vobject cannot read it."""
    card = _parse(raw)
    if getattr(card, "name", "").upper() != "VCARD":
        raise Refused("not a vCard")
    custom = _custom_labels(card)
    fields: dict[str, Any] = {"emails": [], "phones": [], "addresses": [], "urls": [], "labels": []}
    record = Record(fields=fields)
    kept: list[ContentLine] = []
    used_groups: set[str] = set()
    version = "3.0"
    formatted = None
    for line in card.getChildren():
        name = line.name
        types = _types(line)
        if name == "VERSION":
            version = _text(line.value)
        elif name == "UID":
            record.uid = _text(line.value).removeprefix("urn:uuid:") or None
        elif name == "FN":
            formatted = _text(line.value)
        elif name == "N":
            value = line.value
            fields.update(
                last_name=_text(value.family),
                first_name=_text(value.given),
                middle_name=_text(value.additional),
                prefix=_text(value.prefix),
                suffix=_text(value.suffix),
            )
        elif name in ("NICKNAME", "TITLE", "NOTE"):
            key = {"NICKNAME": "nickname", "TITLE": "job_title", "NOTE": "notes"}[name]
            fields[key] = fields.get(key) or str(line.value).strip()
        elif name == "ORG":
            parts = [_text(part) for part in (line.value if isinstance(line.value, list) else [line.value])]
            fields["organization"] = "; ".join(part for part in parts if part)
        elif name in ("EMAIL", "TEL", "URL"):
            value = _text(line.value)
            if name == "TEL":
                value = value.removeprefix("tel:")
            key = {"EMAIL": "emails", "TEL": "phones", "URL": "urls"}[name]
            fields[key].append(
                {"value": value, "label": _label(line, types, custom), "primary": _is_preferred(line, types)}
            )
            if line.group:
                used_groups.add(line.group.lower())
        elif name == "ADR":
            value = line.value
            fields["addresses"].append(
                {
                    "label": _label(line, types, custom),
                    "street": "\n".join(p for p in (_text(value.extended), _text(value.street)) if p),
                    "locality": _text(value.city),
                    "region": _text(value.region),
                    "postal_code": _text(value.code),
                    "country": _text(value.country),
                    "primary": _is_preferred(line, types),
                }
            )
            if line.group:
                used_groups.add(line.group.lower())
        elif name == "BDAY":
            fields["birthday"] = parse_date(_text(line.value))
        elif name in ("ANNIVERSARY", "X-ANNIVERSARY"):
            fields["anniversary"] = parse_date(_text(line.value))
        elif name == "CATEGORIES":
            values = line.value if isinstance(line.value, list) else str(line.value).split(",")
            fields["labels"].extend(_text(value) for value in values)
        elif name == "X-CONTACTS-FAVORITE":
            fields["favorite"] = _text(line.value).upper() in ("TRUE", "1", "YES")
        elif name not in MAPPED:
            kept.append(line)
    if not fields.get("first_name") and not fields.get("last_name") and formatted:
        fields["first_name"] = formatted
    lines = [
        line_text(line)
        for line in kept
        if not (line.name == "X-ABLABEL" and line.group and line.group.lower() in used_groups)
    ]
    if lines:
        record.extra = {"version": version, "lines": lines}
    return record
