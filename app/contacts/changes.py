"""The change feed: what changed in a user's address book since an opaque token, in change order.

Every contact write takes the user's next change sequence number under the lock of the user's `contact_counts`
row (`repository.take_change_seq`), so one user's numbers commit in order: once a reader sees number n, no
number below n can still commit. A token is a position (change_seq, contact id) signed with the JWT key for its
user. A page lists the changes after it; each contact appears once, in its latest state; trashed and purged
contacts are deletes. "Nothing new" is answered from the cache when it holds the user's last number (a field of
the user's list hash, which every contact write invalidates around its commit), without a database query.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import sync_repository as repository
from app.contacts.service import contact_json
from app.core.cache import Kind, cache, dumps
from app.core.config import Settings
from app.core.errors import AppError

HEAD_FIELD = "changes:head"
_TOKEN_VERSION = b"\x01"
_MAC_BYTES = 16


class ChangeTokenExpired(AppError):
    """The change token is older than the kept history; start over without `since`."""

    code = "ChangeTokenExpired"
    status_code = 410


class InvalidChangeToken(AppError):
    """The change token is not one of yours (or is malformed); start over without `since`."""

    code = "InvalidChangeToken"
    status_code = 400


@dataclass(frozen=True, order=True)
class Position:
    """After every change numbered below `seq`, and those numbered `seq` up to contact id `after_id` (0: all)."""

    seq: int
    after_id: int = 0


def _mac(settings: Settings, user_id: int, payload: bytes) -> bytes:
    message = b"contacts-change-token\x00" + str(user_id).encode() + b"\x00" + payload
    return hmac.new(settings.jwt_key.encode(), message, hashlib.sha256).digest()[:_MAC_BYTES]


def encode_token(settings: Settings, user_id: int, position: Position) -> str:
    payload = _TOKEN_VERSION + struct.pack(">QQ", position.seq, position.after_id)
    return base64.urlsafe_b64encode(payload + _mac(settings, user_id, payload)).rstrip(b"=").decode()


def decode_token(settings: Settings, user_id: int, token: str) -> Position:
    """The position a token of this user stands for; InvalidChangeToken for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        raise InvalidChangeToken from None
    payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if (
        len(payload) != 17
        or payload[:1] != _TOKEN_VERSION
        or not hmac.compare_digest(mac, _mac(settings, user_id, payload))
    ):
        raise InvalidChangeToken
    seq, after_id = struct.unpack(">QQ", payload[1:])
    return Position(seq, after_id)


async def _head(db: AsyncSession, user_id: int) -> tuple[int, int]:
    """(last change number, history floor) of the user, through the cache."""

    async def load() -> dict[str, int]:
        seq, floor = await repository.change_head(db, user_id)
        return {"seq": seq, "floor": floor}

    raw = await cache.read_through(
        Kind.contacts_list,
        cache.contacts_key(user_id),
        load,
        cache.settings.cache_contacts_list_ttl,
        hash_field=HEAD_FIELD,
    )
    head = json.loads(raw) if raw else None
    if not isinstance(head, dict) or not isinstance(head.get("seq"), int) or not isinstance(head.get("floor"), int):
        return await repository.change_head(db, user_id)
    return head["seq"], head["floor"]


def _answer(settings: Settings, user_id: int, changes: list[dict[str, Any]], position: Position, more: bool) -> bytes:
    return dumps({"changes": changes, "next_token": encode_token(settings, user_id, position), "has_more": more})


async def get_changes_json(db: AsyncSession, settings: Settings, user_id: int, since: str | None, limit: int) -> bytes:
    """One page of the change feed as JSON. Without `since`, every live contact as an upsert (and then, by the
    tokens that follow, every change since)."""
    position = decode_token(settings, user_id, since) if since is not None else Position(0)
    head_seq, floor = await _head(db, user_id)
    if since is not None:
        if position.seq < floor:
            raise ChangeTokenExpired
        if position == Position(head_seq):
            return _answer(settings, user_id, [], position, False)  # nothing new: no database query
    # The head was read (from the cache or the database) before the changes: every number up to it had
    # committed, so the query below sees them all, and a last page may move the token up to it.
    # From the beginning: after -1, so that even a row no write has numbered yet (change_seq 0) is listed.
    start = position.seq if since is not None else -1
    rows = await repository.changes_after(db, user_id, start, position.after_id, limit + 1, live_only=since is None)
    more = len(rows) > limit
    rows = rows[:limit]
    contacts = await repository.live_rows(db, user_id, [row.id for row in rows if not row.gone])
    changes: list[dict[str, Any]] = []
    for row in rows:
        current = contacts.get(row.id)
        # A contact trashed or purged since the first query is a delete now; its later change follows anyway.
        if current is None:
            changes.append({"id": row.id, "uid": row.uid, "op": "delete", "contact": None})
        else:
            changes.append({"id": row.id, "uid": row.uid, "op": "upsert", "contact": contact_json(current)})
    if since is not None:
        # Tombstones may have been forgotten (and the floor raised) while the changes were read: check again after.
        seq_now, floor_now = await repository.change_head(db, user_id)
        if position.seq < floor_now or position.seq > seq_now:
            raise ChangeTokenExpired
    if more:
        last = rows[-1]
        return _answer(settings, user_id, changes, Position(last.change_seq, last.id), True)
    last_seq = rows[-1].change_seq if rows else position.seq
    return _answer(settings, user_id, changes, Position(max(last_seq, head_seq, position.seq)), False)


async def current_token(db: AsyncSession, settings: Settings, user_id: int) -> str:
    """The token of the address book as it is now (what a reader who has seen every change holds): CardDAV's
    sync-token and ctag. Read through the cache, as a poll with nothing new is."""
    head_seq, _ = await _head(db, user_id)
    return encode_token(settings, user_id, Position(head_seq))
