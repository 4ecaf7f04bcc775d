"""CardDAV (RFC 6352 over WebDAV, RFC 4918; sync by RFC 6578): discovery, PROPFIND, the three reports, and cards
read and written with ETags. A door onto the contacts service, beside the REST API: no business rule of its own.
Not in the OpenAPI schema (its methods are not HTTP's usual ones)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response

from app.core.config import Settings
from app.core.db import SessionDep
from app.dav import books, properties
from app.dav.auth import DavUser
from app.dav.xml import CARDDAV, DAV, DavError, PropStat, multistatus, parse, requested_props, tag

router = APIRouter(include_in_schema=False)

DAV_HEADERS = {"DAV": "1, 3, addressbook", "Allow": "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, REPORT"}
COLLECTION_METHODS = ["OPTIONS", "PROPFIND", "REPORT", "GET", "HEAD", "PUT", "DELETE", "MKCOL", "PROPPATCH"]
UserId = Annotated[int, Path(ge=1, le=2**63 - 1)]


async def _body(request: Request) -> bytes:
    return await request.body()


Body = Annotated[bytes, Depends(_body)]


def _depth(request: Request, *, allowed: tuple[str, ...] = ("0", "1")) -> str:
    """The Depth header ("0" when absent: clients that leave it out mean the resource itself)."""
    depth = request.headers.get("depth", "0").strip().lower()
    if depth == "infinity":
        raise DavError(403, tag(DAV, "propfind-finite-depth"), "Depth: infinity is not supported.")
    if depth not in allowed:
        raise DavError(400, message="Depth must be 0 or 1.")
    return depth


def _own(user: DavUser, user_id: int) -> None:
    if user.id != user_id:
        raise DavError(404)


def _options() -> Response:
    return Response(status_code=200, headers=DAV_HEADERS)


def _not_here(method: str) -> Response:
    if method == "OPTIONS":
        return _options()
    if method in ("MKCOL",):
        raise DavError(403, message="More address books are not supported yet: use the default one.")
    raise DavError(405, message=f"{method} is not supported on this resource.", headers={"Allow": DAV_HEADERS["Allow"]})


@router.api_route("/.well-known/carddav", methods=["GET", "HEAD", "PROPFIND", "OPTIONS"])
async def well_known() -> Response:
    """RFC 6764: where the DAV root is (PROPFIND too: iOS and tsdav read Location without following)."""
    return Response(status_code=301, headers={"Location": books.DAV_ROOT})


@router.api_route("/dav/", methods=COLLECTION_METHODS)
@router.api_route("/dav", methods=COLLECTION_METHODS)
async def dav_root(request: Request, user: DavUser, body: Body) -> Response:
    if request.method != "PROPFIND":
        return _not_here(request.method)
    wanted = requested_props(parse(body))
    return multistatus([properties.answer(books.DAV_ROOT, properties.root(user.id), wanted)])


@router.api_route("/dav/principals/{user_id}/", methods=COLLECTION_METHODS)
@router.api_route("/dav/principals/{user_id}", methods=COLLECTION_METHODS)
async def principal(request: Request, user_id: UserId, user: DavUser, body: Body) -> Response:
    _own(user, user_id)
    if request.method != "PROPFIND":
        return _not_here(request.method)
    wanted = requested_props(parse(body))
    href = books.principal_path(user_id)
    return multistatus([properties.answer(href, properties.principal(user_id, user.email), wanted)])


@router.api_route("/dav/addressbooks/{user_id}/", methods=COLLECTION_METHODS)
@router.api_route("/dav/addressbooks/{user_id}", methods=COLLECTION_METHODS)
async def home(request: Request, user_id: UserId, user: DavUser, session: SessionDep, body: Body) -> Response:
    _own(user, user_id)
    if request.method != "PROPFIND":
        return _not_here(request.method)
    depth, wanted = _depth(request), requested_props(parse(body))
    answers = [properties.answer(books.home_path(user_id), properties.home(user_id), wanted)]
    if depth == "1":
        token = await books.sync_token(session, _settings(request), user_id)
        answers.append(properties.answer(books.book_path(user_id), properties.book(user_id, token), wanted))
    return multistatus(answers)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.api_route(f"/dav/addressbooks/{{user_id}}/{books.BOOK_NAME}/", methods=COLLECTION_METHODS)
@router.api_route(f"/dav/addressbooks/{{user_id}}/{books.BOOK_NAME}", methods=COLLECTION_METHODS)
async def book(request: Request, user_id: UserId, user: DavUser, session: SessionDep, body: Body) -> Response:
    _own(user, user_id)
    if request.method == "PROPFIND":
        depth, wanted = _depth(request), requested_props(parse(body))
        token = await books.sync_token(session, _settings(request), user_id)
        answers = [properties.answer(books.book_path(user_id), properties.book(user_id, token), wanted)]
        if depth == "1":
            async for rows in books.member_batches(session, user_id):
                for row in rows:
                    href = books.card_href(user_id, row["uid"])
                    answers.append(properties.answer(href, properties.card(row), wanted))
        return multistatus(answers)
    if request.method == "REPORT":
        return await _report(request, user_id, session, body)
    return _not_here(request.method)


async def _report(request: Request, user_id: int, session: SessionDep, body: bytes) -> Response:
    """addressbook-multiget, addressbook-query and sync-collection; Depth is accepted on each (clients send it)."""
    _depth(request)
    root = parse(body)
    if root is None:
        raise DavError(400, message="REPORT needs a body.")
    prop = root.find(tag(DAV, "prop"))
    wanted = (requested_props(root) if prop is not None else None) or [properties.GETETAG]
    version = properties.address_data_version(prop)

    if root.tag == tag(CARDDAV, "addressbook-multiget"):
        asked = [(href.text or "").strip() for href in root.findall(tag(DAV, "href"))]
        uids = {href: books.uid_of_href(user_id, href) for href in asked}
        rows = await books.cards(session, user_id, [uid for uid in uids.values() if uid])
        return multistatus(
            await _cards(user_id, [(href, rows.get(uid or "")) for href, uid in uids.items()], wanted, version)
        )

    if root.tag == tag(CARDDAV, "addressbook-query"):
        flt = root.find(tag(CARDDAV, "filter"))
        limit_element = root.find(f"{tag(CARDDAV, 'limit')}/{tag(CARDDAV, 'nresults')}")
        nresults = (limit_element.text or "").strip() if limit_element is not None else ""
        limit = int(nresults) if nresults.isdigit() else None
        answers: list[PropStat] = []
        async for batch in books.member_batches(session, user_id):
            texts = await books.texts(user_id, batch, version)
            chosen = [row for row in batch if properties.matches(flt, texts[int(row["id"])])]
            found = [(books.card_href(user_id, row["uid"]), row) for row in chosen]
            answers += await _cards(user_id, found, wanted, version, texts)
            if limit is not None and len(answers) >= limit:
                return multistatus(answers[:limit])
        return multistatus(answers)

    if root.tag == tag(DAV, "sync-collection"):
        token_element = root.find(tag(DAV, "sync-token"))
        held = (token_element.text or "").strip() if token_element is not None else None
        changed, token = await books.sync(session, _settings(request), user_id, held)
        live = await books.cards(session, user_id, [c["uid"] for c in changed if c["op"] != "delete"])
        # A contact trashed after the feed was read is a delete now (no row): answered 404 like the others.
        pairs = [(books.card_href(user_id, c["uid"]), live.get(c["uid"])) for c in changed]
        return multistatus(await _cards(user_id, pairs, wanted, version), sync_token=token)

    raise DavError(403, tag(DAV, "supported-report"), "This report is not supported here.")


async def _cards(
    user_id: int,
    found: Sequence[tuple[str, dict[str, Any] | None]],
    wanted: list[str],
    version: str,
    texts: dict[int, str] | None = None,
) -> list[PropStat]:
    """The answers for (href, row or None) pairs: 404 for a missing card, else the properties asked for, the
    cards' text included when `address-data` is (read through the cache in one round trip)."""
    rows = [row for _, row in found if row is not None]
    if properties.ADDRESS_DATA in wanted and texts is None:
        texts = await books.texts(user_id, rows, version)
    answers = []
    for href, row in found:
        if row is None:
            answers.append(PropStat(href, status=404))
        else:
            text = texts[int(row["id"])] if texts is not None and properties.ADDRESS_DATA in wanted else None
            answers.append(properties.answer(href, properties.card(row, text), wanted))
    return answers


@router.api_route(f"/dav/addressbooks/{{user_id}}/{books.BOOK_NAME}/{{name}}", methods=COLLECTION_METHODS)
async def card(
    request: Request, user_id: UserId, name: str, user: DavUser, session: SessionDep, body: Body
) -> Response:
    _own(user, user_id)
    uid = books.uid_of(name)
    if uid is None:
        raise DavError(404)
    method = request.method
    if method in ("GET", "HEAD"):
        row = await books.card(session, user_id, uid)
        if row is None:
            raise DavError(404)
        version = "4.0" if "version=4.0" in request.headers.get("accept", "").replace(" ", "") else "3.0"
        text = (await books.texts(user_id, [row], version))[int(row["id"])]
        headers = {"ETag": books.etag(row)}
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        content = b"" if method == "HEAD" else text.encode()
        return Response(content, 200, headers=headers, media_type="text/vcard; charset=utf-8")
    if method == "PUT":
        created = await books.put_card(
            session,
            user_id,
            uid,
            body,
            if_match=request.headers.get("if-match"),
            if_none_match=request.headers.get("if-none-match"),
        )
        # No ETag: the stored card is ours (re-serialised), not byte for byte the one sent (RFC 6352 6.3.2.3).
        return Response(status_code=201 if created else 204)
    if method == "DELETE":
        await books.delete_card(session, user_id, uid, if_match=request.headers.get("if-match"))
        return Response(status_code=204)
    if method == "PROPFIND":
        row = await books.card(session, user_id, uid)
        if row is None:
            raise DavError(404)
        wanted = requested_props(parse(body))
        return multistatus([properties.answer(books.card_href(user_id, uid), properties.card(row), wanted)])
    return _not_here(method)
