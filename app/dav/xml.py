"""WebDAV XML: request bodies parsed safely (defusedxml: no DTD, no entities, no external references; a size and
a depth limit), and the multistatus and error bodies that RFC 4918, 6352 and 6578 answer."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # building answers only; requests are parsed with defusedxml
from collections.abc import Iterable
from dataclasses import dataclass, field

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from fastapi import Response

DAV = "DAV:"
CARDDAV = "urn:ietf:params:xml:ns:carddav"
CALSERVER = "http://calendarserver.org/ns/"
ET.register_namespace("d", DAV)
ET.register_namespace("card", CARDDAV)
ET.register_namespace("cs", CALSERVER)

MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 32
XML_MEDIA_TYPE = "application/xml; charset=utf-8"


def tag(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


class DavError(Exception):
    """A refusal in the DAV error format: `status` with `<d:error><precondition/></d:error>` (or no body)."""

    def __init__(
        self, status: int, precondition: str | None = None, message: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message or precondition or str(status))
        self.status = status
        self.precondition = precondition
        self.message = message
        self.headers = headers

    def response(self) -> Response:
        if self.precondition is None:
            return Response(self.message or None, self.status, self.headers, media_type="text/plain; charset=utf-8")
        root = ET.Element(tag(DAV, "error"))
        ET.SubElement(root, self.precondition)
        if self.message:
            ET.SubElement(root, tag(DAV, "responsedescription")).text = self.message
        return xml_response(root, self.status, self.headers)


async def dav_error_response(_: object, exc: Exception) -> Response:
    """The application's handler of DavError."""
    if not isinstance(exc, DavError):  # pragma: no cover - registered for that class only
        raise exc
    return exc.response()


def parse(body: bytes) -> ET.Element | None:
    """The request's XML document, or None for an empty body; DavError 400/413 for anything unsafe or broken."""
    if not body.strip():
        return None
    if len(body) > MAX_BODY_BYTES:
        raise DavError(413, message=f"request bodies are limited to {MAX_BODY_BYTES} bytes")
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (DefusedXmlException, ET.ParseError, ValueError) as exc:
        raise DavError(400, message=f"the body is not acceptable XML: {type(exc).__name__}") from exc
    if _depth(root) > MAX_DEPTH:
        raise DavError(400, message="the XML body is nested too deeply")
    parsed: ET.Element = root
    return parsed


def _depth(element: ET.Element, level: int = 1) -> int:
    if level > MAX_DEPTH:
        return level
    return max((_depth(child, level + 1) for child in element), default=level)


def xml_response(root: ET.Element, status: int = 207, headers: dict[str, str] | None = None) -> Response:
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return Response(body, status, headers=headers, media_type=XML_MEDIA_TYPE)


@dataclass
class PropStat:
    """One resource's answer: found properties (name -> element builder result) and the names not found."""

    href: str
    found: list[ET.Element] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    status: int | None = None  # a response with a status and no properties (a deleted member in a sync report)


STATUS_TEXT = {200: "OK", 403: "Forbidden", 404: "Not Found", 507: "Insufficient Storage"}


def _status(code: int) -> str:
    return f"HTTP/1.1 {code} {STATUS_TEXT.get(code, '')}".rstrip()


def multistatus(responses: Iterable[PropStat], sync_token: str | None = None) -> Response:
    root = ET.Element(tag(DAV, "multistatus"))
    for item in responses:
        response = ET.SubElement(root, tag(DAV, "response"))
        ET.SubElement(response, tag(DAV, "href")).text = item.href
        if item.status is not None:
            ET.SubElement(response, tag(DAV, "status")).text = _status(item.status)
            continue
        for elements, code in ((item.found, 200), ([ET.Element(name) for name in item.missing], 404)):
            if not elements:
                continue
            propstat = ET.SubElement(response, tag(DAV, "propstat"))
            prop = ET.SubElement(propstat, tag(DAV, "prop"))
            prop.extend(elements)
            ET.SubElement(propstat, tag(DAV, "status")).text = _status(code)
    if sync_token is not None:
        ET.SubElement(root, tag(DAV, "sync-token")).text = sync_token
    return xml_response(root)


def element(name: str, text: str | None = None, children: Iterable[ET.Element] = ()) -> ET.Element:
    node = ET.Element(name)
    if text is not None:
        node.text = text
    node.extend(children)
    return node


def href_element(href: str) -> ET.Element:
    return element(tag(DAV, "href"), href)


def requested_props(root: ET.Element | None) -> list[str] | None:
    """The property names a PROPFIND or REPORT asks for; None for `allprop` (or no body)."""
    if root is None or root.find(tag(DAV, "allprop")) is not None:
        return None
    prop = root.find(tag(DAV, "prop"))
    if prop is None:
        if root.find(tag(DAV, "propname")) is not None:
            return None
        raise DavError(400, message="PROPFIND needs prop, allprop or propname")
    return [child.tag for child in prop]
