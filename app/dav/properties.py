"""The WebDAV properties each kind of resource answers (RFC 4918, 5397, 6352, 6578 and the calendarserver ctag), and
the text-match filter of addressbook-query (RFC 6352 10.5), judged on the card as it is served."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from app.dav import books
from app.dav.xml import CALSERVER, CARDDAV, DAV, PropStat, element, href_element, tag

Builder = Callable[[], ET.Element]

ADDRESS_DATA = tag(CARDDAV, "address-data")
GETETAG = tag(DAV, "getetag")
REPORTS = (tag(CARDDAV, "addressbook-multiget"), tag(CARDDAV, "addressbook-query"), tag(DAV, "sync-collection"))
PRIVILEGES = ("read", "write", "write-properties", "write-content", "bind", "unbind", "read-current-user-privilege-set")


def answer(href: str, available: dict[str, Builder], wanted: list[str] | None) -> PropStat:
    """The properties asked for (all of `available` for allprop): found ones built, the others listed missing."""
    names = list(available) if wanted is None else wanted
    result = PropStat(href)
    for name in names:
        build = available.get(name)
        if build is None:
            result.missing.append(name)
        else:
            result.found.append(build())
    return result


def _resourcetype(*kinds: str) -> Builder:
    return lambda: element(tag(DAV, "resourcetype"), children=[ET.Element(kind) for kind in kinds])


def _text(name: str, value: str) -> Builder:
    return lambda: element(name, value)


def _href(name: str, href: str) -> Builder:
    return lambda: element(name, children=[href_element(href)])


def _privileges() -> ET.Element:
    privileges = [element(tag(DAV, "privilege"), children=[ET.Element(tag(DAV, name))]) for name in PRIVILEGES]
    return element(tag(DAV, "current-user-privilege-set"), children=privileges)


def _reports() -> ET.Element:
    supported = [
        element(tag(DAV, "supported-report"), children=[element(tag(DAV, "report"), children=[ET.Element(name)])])
        for name in REPORTS
    ]
    return element(tag(DAV, "supported-report-set"), children=supported)


def _address_data_types() -> ET.Element:
    types = [
        ET.Element(tag(CARDDAV, "address-data-type"), {"content-type": "text/vcard", "version": version})
        for version in ("3.0", "4.0")
    ]
    return element(tag(CARDDAV, "supported-address-data"), children=types)


def identity(user_id: int) -> dict[str, Builder]:
    """What every resource of the user's answers: who they are and where their books live."""
    return {
        tag(DAV, "current-user-principal"): _href(tag(DAV, "current-user-principal"), books.principal_path(user_id)),
        tag(DAV, "principal-URL"): _href(tag(DAV, "principal-URL"), books.principal_path(user_id)),
        tag(CARDDAV, "addressbook-home-set"): _href(tag(CARDDAV, "addressbook-home-set"), books.home_path(user_id)),
    }


def root(user_id: int) -> dict[str, Builder]:
    return {tag(DAV, "resourcetype"): _resourcetype(tag(DAV, "collection")), **identity(user_id)}


def principal(user_id: int, email: str) -> dict[str, Builder]:
    return {
        tag(DAV, "resourcetype"): _resourcetype(tag(DAV, "principal")),
        tag(DAV, "displayname"): _text(tag(DAV, "displayname"), email),
        **identity(user_id),
    }


def home(user_id: int) -> dict[str, Builder]:
    return {
        tag(DAV, "resourcetype"): _resourcetype(tag(DAV, "collection")),
        tag(DAV, "current-user-privilege-set"): _privileges,
        **identity(user_id),
    }


def book(user_id: int, token: str) -> dict[str, Builder]:
    return {
        tag(DAV, "resourcetype"): _resourcetype(tag(DAV, "collection"), tag(CARDDAV, "addressbook")),
        tag(DAV, "displayname"): _text(tag(DAV, "displayname"), "Contacts"),
        tag(CALSERVER, "getctag"): _text(tag(CALSERVER, "getctag"), token),
        tag(DAV, "sync-token"): _text(tag(DAV, "sync-token"), token),
        tag(DAV, "supported-report-set"): _reports,
        tag(CARDDAV, "supported-address-data"): _address_data_types,
        tag(CARDDAV, "max-resource-size"): _text(tag(CARDDAV, "max-resource-size"), str(books.MAX_CARD_BYTES)),
        tag(DAV, "current-user-privilege-set"): _privileges,
        tag(DAV, "owner"): _href(tag(DAV, "owner"), books.principal_path(user_id)),
        **identity(user_id),
    }


def card(row: dict[str, Any], text: str | None = None) -> dict[str, Builder]:
    """A card's properties; `address-data` (its `text`) only when given, for a report that asked for it by name
    (never in allprop: it is the card itself)."""
    available: dict[str, Builder] = {
        GETETAG: _text(GETETAG, books.etag(row)),
        tag(DAV, "getcontenttype"): _text(tag(DAV, "getcontenttype"), "text/vcard; charset=utf-8"),
        tag(DAV, "resourcetype"): _resourcetype(),
    }
    if text is not None:
        available[ADDRESS_DATA] = lambda: element(ADDRESS_DATA, text)
    return available


def address_data_version(prop: ET.Element | None) -> str:
    """The vCard version an `address-data` request element asks for (3.0 unless 4.0 is named)."""
    requested = prop.find(ADDRESS_DATA) if prop is not None else None
    return "4.0" if requested is not None and requested.get("version") == "4.0" else "3.0"


# -- addressbook-query ---------------------------------------------------------------------------------------------


def _properties(text: str) -> dict[str, list[str]]:
    """Property name -> values of an unfolded card (parameters and groups dropped): what text-match compares."""
    found: dict[str, list[str]] = {}
    for line in text.replace("\r\n ", "").replace("\n ", "").splitlines():
        head, sep, value = line.partition(":")
        if not sep:
            continue
        name = head.split(";", 1)[0].rsplit(".", 1)[-1].upper()
        found.setdefault(name, []).append(value.replace("\\,", ",").replace("\\;", ";").replace("\\n", "\n"))
    return found


def _text_match(values: list[str], match: ET.Element) -> bool:
    wanted = (match.text or "").casefold()
    kind = match.get("match-type", "contains")

    def test(value: str) -> bool:
        if kind == "equals":
            return value == wanted
        if kind == "starts-with":
            return value.startswith(wanted)
        if kind == "ends-with":
            return value.endswith(wanted)
        return wanted in value

    hit = any(test(value.casefold()) for value in values)
    return not hit if match.get("negate-condition") == "yes" else hit


def _prop_filter(properties: dict[str, list[str]], prop_filter: ET.Element) -> bool:
    values = properties.get((prop_filter.get("name") or "").upper(), [])
    if prop_filter.find(tag(CARDDAV, "is-not-defined")) is not None:
        return not values
    matches = prop_filter.findall(tag(CARDDAV, "text-match"))
    if not matches:
        return bool(values)
    results = [_text_match(values, match) for match in matches]
    return all(results) if prop_filter.get("test") == "allof" else any(results)


def matches(filter_element: ET.Element | None, text: str) -> bool:
    """Whether a card (its served text) passes an addressbook-query `filter` (anyof unless test="allof")."""
    if filter_element is None:
        return True
    prop_filters = filter_element.findall(tag(CARDDAV, "prop-filter"))
    if not prop_filters:
        return True
    properties = _properties(text)
    results = [_prop_filter(properties, prop_filter) for prop_filter in prop_filters]
    return all(results) if filter_element.get("test") == "allof" else any(results)
