"""How cached values are written and read: compact JSON (never pickle), users reduced to an allow-list of fields."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from app.core.cache.backend import MARKER_PREFIX

logger = logging.getLogger(__package__)  # one logger for the whole cache: "app.core.cache"

# Non-secret user fields that may be cached. Anything else (password hashes, tokens) is dropped.
USER_CACHE_FIELDS = frozenset(
    {
        "id",
        "email",
        "role",
        "is_active",
        "is_verified",
        "avatar_url",
        "created_at",
        "updated_at",
        "token_version",
        "default_region",
    }
)


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(data: Any) -> bytes:
    return json.dumps(data, default=_json_default, separators=(",", ":"), ensure_ascii=False).encode()


def dumps_or_none(data: Any) -> bytes | None:
    """`dumps`, with None (a loader's "not found") passed through."""
    return None if data is None else dumps(data)


def loads_value(raw: bytes | None) -> Any:
    """A cached value decoded; None for a missing key, a marker (lease or tombstone) or undecodable bytes."""
    if raw is None or raw.startswith(MARKER_PREFIX):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        logger.warning("cache: undecodable value ignored")
        return None


def filter_user_data(user_data: Mapping[str, Any]) -> dict[str, Any]:
    """Only allow-listed, non-secret fields of a user ever reach the cache."""
    return {key: value for key, value in user_data.items() if key in USER_CACHE_FIELDS}
