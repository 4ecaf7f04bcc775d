"""List cursors: the sort key of a page's last row, signed and bound to its user and its query, so that a cursor
is opaque, cannot be forged or moved to another user's list or another query, and continues in the same order."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from functools import lru_cache
from typing import Any

from app.contacts.queries import ListQuery, key_of
from app.core.errors import AppError

MAX_CURSOR_LENGTH = 1024
_MAC_BYTES = 16


class InvalidCursor(AppError):
    """The cursor is not one this list gave out (or was given for another query); start again without it."""

    code = "InvalidCursor"
    status_code = 400


@lru_cache(maxsize=8)
def _key(secret: str) -> bytes:
    # A key of its own, derived from the token key: a cursor's signature can never pass as a token's.
    return hashlib.sha256(b"contacts-api list cursor\x00" + secret.encode()).digest()


def _query_id(query: ListQuery) -> str:
    described = json.dumps([query.sort, query.q, query.label, query.favorite], ensure_ascii=False)
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(secret: str, user_id: int, query: ListQuery, key: list[Any]) -> str:
    payload = json.dumps({"u": user_id, "q": _query_id(query), "k": key}, separators=(",", ":")).encode()
    mac = hmac.new(_key(secret), payload, hashlib.sha256).digest()[:_MAC_BYTES]
    return f"{_b64(payload)}.{_b64(mac)}"


def decode(secret: str, user_id: int, query: ListQuery, cursor: str) -> list[Any]:
    """The sort key a cursor carries; InvalidCursor unless it was made by `encode` for this user and query."""
    try:
        body, mac = cursor.split(".")
        payload = _unb64(body)
        expected = hmac.new(_key(secret), payload, hashlib.sha256).digest()[:_MAC_BYTES]
        if not hmac.compare_digest(_unb64(mac), expected):
            raise InvalidCursor
        data = json.loads(payload)
        if data["u"] != user_id or data["q"] != _query_id(query):
            raise InvalidCursor
        return key_of(query.sort, data["k"])
    except InvalidCursor:
        raise
    except (ValueError, KeyError, TypeError) as exc:  # malformed base64, JSON or key (binascii.Error is a ValueError)
        raise InvalidCursor from exc
