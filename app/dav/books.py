"""The address book as CardDAV sees it, over the contacts service: one book per user, a card per live contact
named by its uid (`<uid>.vcf`), the same ETags as the REST API, sync tokens from the change feed, and writes that
take the same lock, change numbers and cache invalidation as every other door's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import changes, service, trash
from app.contacts.schemas import etag_of
from app.contacts.service import PreconditionFailed
from app.core.cache import cache, loads_value
from app.core.config import Settings
from app.dav.xml import CARDDAV, DAV, DavError, tag
from app.interchange.records import Refused, normalise
from app.interchange.vcard_in import read_card
from app.interchange.vcard_out import write_card

DAV_ROOT = "/dav/"
BOOK_NAME = "contacts"
SYNC_PREFIX = "urn:x-contacts-api:sync:"
MAX_CARD_BYTES = 1024 * 1024
BATCH = 500
FEED_PAGE = 500


def principal_path(user_id: int) -> str:
    return f"{DAV_ROOT}principals/{user_id}/"


def home_path(user_id: int) -> str:
    return f"{DAV_ROOT}addressbooks/{user_id}/"


def book_path(user_id: int) -> str:
    return f"{home_path(user_id)}{BOOK_NAME}/"


def card_href(user_id: int, uid: str) -> str:
    return f"{book_path(user_id)}{quote(uid, safe='')}.vcf"


def uid_of(name: str) -> str | None:
    """The uid a (decoded) resource name stands for: `<uid>.vcf`; None for a name that is not a card's."""
    if not name.endswith(".vcf") or len(name) <= 4:
        return None
    return name[:-4]


def uid_of_href(user_id: int, href: str) -> str | None:
    """The uid of a card's href (a path or a full URL, percent-encoded) in the user's book; None otherwise."""
    path = urlsplit(href).path
    prefix = book_path(user_id)
    if not path.startswith(prefix) or "/" in path[len(prefix) :]:
        return None
    return uid_of(unquote(path[len(prefix) :]))


def etag(row: dict[str, Any]) -> str:
    return etag_of(int(row["id"]), int(row["version"]))


def card_text(row: dict[str, Any], version: str = "3.0") -> str:
    return write_card(row, "4.0" if version == "4.0" else "3.0")


# -- reads --------------------------------------------------------------------------------------------------------


async def sync_token(db: AsyncSession, settings: Settings, user_id: int) -> str:
    return SYNC_PREFIX + await changes.current_token(db, settings, user_id)


async def member_batches(db: AsyncSession, user_id: int) -> AsyncIterator[list[dict[str, Any]]]:
    """Every live contact of the user, in id order, a batch at a time (never the whole book in memory)."""
    after = 0
    while True:
        rows = await service.export_batch(db, user_id, after_id=after, limit=BATCH)
        if rows:
            yield rows
        if len(rows) < BATCH:
            return
        after = int(rows[-1]["id"])


async def cards(db: AsyncSession, user_id: int, uids: list[str]) -> dict[str, dict[str, Any]]:
    """The live contacts among `uids`, by uid, in one query."""
    return {str(row["uid"]): row for row in await service.rows_by_uids(db, user_id, uids)}


async def card(db: AsyncSession, user_id: int, uid: str) -> dict[str, Any] | None:
    return (await cards(db, user_id, [uid])).get(uid)


async def texts(user_id: int, rows: list[dict[str, Any]], version: str) -> dict[int, str]:
    """Each contact's vCard text (by id) as served: from the cache, whose keys name the contact's version (so a
    cached card is never older than the contact), else serialised and cached. The reads are one round trip for
    the lot; each card missing from the cache costs one more, to store it."""
    keys = [cache.card_key(int(row["id"]), int(row["version"]), version, user_id) for row in rows]
    cached = await cache.prefetch([(key, None) for key in keys]) if rows else None
    found: dict[int, str] = {}
    missing: list[tuple[dict[str, Any], str]] = []
    for n, (row, key) in enumerate(zip(rows, keys, strict=True)):
        value = loads_value(cached[n]) if cached else None
        if isinstance(value, dict) and isinstance(value.get("card"), str):
            found[int(row["id"])] = value["card"]
        else:
            missing.append((row, key))
    # vobject takes ~0.6 ms a card: a cold multiget or query batch is serialised off the event loop.
    written = await asyncio.to_thread(lambda: [card_text(row, version) for row, _ in missing]) if missing else []
    for (row, key), text in zip(missing, written, strict=True):
        found[int(row["id"])] = text
        await cache.store(key, {"card": text}, cache.settings.cache_contact_ttl)
    return found


async def sync(
    db: AsyncSession, settings: Settings, user_id: int, token: str | None
) -> tuple[list[dict[str, Any]], str]:
    """What changed since `token` (every live contact without one): the feed's changes, each contact once in its
    latest state, and the token to give the client. An unknown or expired token: 403 DAV:valid-sync-token."""
    since: str | None = None
    if token:
        if not token.startswith(SYNC_PREFIX):
            raise DavError(403, tag(DAV, "valid-sync-token"), "Unknown sync token: sync again from the start.")
        since = token[len(SYNC_PREFIX) :]
    latest: dict[int, dict[str, Any]] = {}
    while True:
        try:
            page = json.loads(await changes.get_changes_json(db, settings, user_id, since, FEED_PAGE))
        except (changes.InvalidChangeToken, changes.ChangeTokenExpired) as exc:
            raise DavError(403, tag(DAV, "valid-sync-token"), "Unknown or expired sync token.") from exc
        for change in page["changes"]:
            latest.pop(change["id"], None)
            latest[change["id"]] = change
        since = page["next_token"]
        if not page["has_more"]:
            return list(latest.values()), SYNC_PREFIX + str(since)


# -- writes -------------------------------------------------------------------------------------------------------


def _read(body: bytes, uid: str) -> Any:
    if len(body) > MAX_CARD_BYTES:
        raise DavError(403, tag(CARDDAV, "max-resource-size"), f"A card is limited to {MAX_CARD_BYTES} bytes.")
    try:
        record = normalise(read_card(body))
    except Refused as exc:
        raise DavError(400, tag(CARDDAV, "valid-address-data"), str(exc)) from exc
    if record.uid is None:
        record.uid = uid  # a card without UID: its resource name is its identity
    elif record.uid != uid:
        raise DavError(400, tag(CARDDAV, "valid-address-data"), "The card's UID must be its resource name.")
    return record


async def put_card(
    db: AsyncSession, user_id: int, uid: str, body: bytes, *, if_match: str | None, if_none_match: str | None
) -> bool:
    """Store a card at `<uid>.vcf`: create it (True) or replace the contact's fields (False). `If-None-Match: *`
    refuses to overwrite and `If-Match` to replace another version (412), never a silent overwrite."""
    record = _read(body, uid)
    region = await service.lock_address_book(db, user_id)
    contact = await service.contact_by_uid(db, user_id, uid)
    live = contact is not None and contact.deleted_at is None
    if (if_none_match or "").strip() == "*" and live:
        raise DavError(412, message="A card already exists here.")
    if if_match is not None:
        if contact is None or not live:
            raise DavError(412, message="No such card: it was deleted meanwhile.")
        try:
            service.check_if_match(if_match, contact)
        except PreconditionFailed as exc:
            raise DavError(412, message="The card changed meanwhile: fetch it again.") from exc
    if contact is None:
        await service.create_imported(db, user_id, record.fields, uid=uid, extra=record.extra, region=region)
        return True
    if not live:
        # The same uid sits in the trash: a client writing it again brings it back, with the card's fields.
        await trash.restore_contact(db, contact.id, user_id)
        await db.refresh(contact)
    await service.update_imported(db, contact, record.fields, extra=record.extra, region=region)
    return not live


async def delete_card(db: AsyncSession, user_id: int, uid: str, *, if_match: str | None) -> None:
    """Move the card's contact to the trash (as the REST DELETE does); 404 if there is none, 412 on a stale
    If-Match."""
    row = await card(db, user_id, uid)
    if row is None:
        raise DavError(404)
    try:
        await service.delete_contact(db, int(row["id"]), user_id, if_match=if_match)
    except PreconditionFailed as exc:
        raise DavError(412, message="The card changed meanwhile: fetch it again.") from exc
