"""The Idempotency-Key header of POST /contacts and POST /contacts/batch: a retry answers the first response.

The key is claimed in the request's own transaction, before anything else is written (a row keyed by user and key),
and its response is stored in that same transaction: the write and its key commit together or not at all. A second
request with the key while the first is open waits for it (PostgreSQL's unique-index wait; SQLite's database lock),
then finds the stored response and answers it again. A request that fails stores nothing (its transaction rolls
back, key included), so its retry runs afresh. Keys are per user and live 24 hours.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Header, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import sync_repository as repository
from app.core.cache import dumps
from app.core.db import utcnow
from app.core.errors import AppError

KEY_TTL = timedelta(hours=24)
REPLAYED_HEADER = "Idempotent-Replayed"

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description=(
            "A key of your choice (1-255 printable ASCII characters, e.g. a UUID) that makes this request safe to "
            "retry: within 24 hours, the same key with the same body answers the first response again and does "
            "nothing more; with another body it answers 422. Keys are per user."
        ),
    ),
]


class IdempotencyKeyReused(AppError):
    """This Idempotency-Key was used with a different request; use a new key for a new request."""

    code = "IdempotencyKeyReused"
    status_code = 422


@dataclass(frozen=True)
class Outcome:
    status_code: int
    body: bytes
    replayed: bool


def fingerprint(method: str, path: str, body: Any) -> str:
    """What makes two requests "the same": method, path and the JSON body (keys sorted)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


async def once(
    db: AsyncSession,
    user_id: int,
    key: str,
    request_hash: str,
    run: Callable[[], Awaitable[tuple[int, Any]]],
) -> Outcome:
    """Run `run` (which answers a status and a JSON-able body) once per (user, key): a retry gets the stored
    answer. Must be the first write of `db`'s transaction (the claim is what serialises the retries)."""
    stored = await repository.claim_idempotency_key(db, user_id, key, request_hash, utcnow() - KEY_TTL)
    if stored is not None:
        if stored.request_hash != request_hash:
            raise IdempotencyKeyReused
        return Outcome(int(stored.status_code or 200), (stored.body or "null").encode(), True)
    status_code, payload = await run()
    body = dumps(payload)
    await repository.store_idempotent_response(db, user_id, key, status_code, body.decode())
    return Outcome(status_code, body, False)


def response_of(outcome: Outcome) -> Response:
    """The HTTP answer of an idempotent request: the stored or fresh body and status, the ETag of a contact in it,
    and `Idempotent-Replayed: true` on a replay."""
    headers = {REPLAYED_HEADER: "true"} if outcome.replayed else {}
    if outcome.status_code == 201:
        etag = json.loads(outcome.body).get("etag")
        if isinstance(etag, str):
            headers["ETag"] = etag
    return Response(outcome.body, outcome.status_code, headers=headers, media_type="application/json")


async def create_once(
    db: AsyncSession, user_id: int, key: str, body: BaseModel, create: Callable[[], Awaitable[dict[str, Any]]]
) -> Response:
    """`POST /contacts` with an Idempotency-Key: `create` runs once per (user, key, body); retries get its 201."""

    async def run() -> tuple[int, Any]:
        return 201, await create()

    request_hash = fingerprint("POST", "/contacts", body.model_dump(mode="json", exclude_unset=True))
    return response_of(await once(db, user_id, key, request_hash, run))
