"""The sync routes: the trash, the change feed and batches. Included before `/contacts/{contact_id}`, whose path
would otherwise take `trash`, `changes` and `batch` for ids."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from app.contacts import batch, changes, idempotency, trash
from app.contacts.batch import BatchOperationFailed
from app.contacts.idempotency import IdempotencyKeyHeader
from app.contacts.router import ContactId, ContactsUser, Limit, Skip
from app.contacts.schemas import ContactRead
from app.contacts.sync_schemas import BatchError, BatchRequest, BatchResponse, ChangeFeed, TrashPage
from app.core.cache import dumps
from app.core.config import Settings
from app.core.db import SessionDep, read_session
from app.core.errors import ErrorBody
from app.core.openapi import errors
from app.core.rate_limit import rate_limiter

router = APIRouter(prefix="/contacts", tags=["sync"])

MAX_CHANGES_PAGE = 500
ChangeToken = Annotated[
    str | None,
    Query(
        max_length=100,
        description="The `next_token` of your last page; leave it out (or empty) to start from the beginning.",
    ),
]


_GONE: dict[int | str, dict[str, Any]] = {
    410: {"model": ErrorBody, "description": "The change token is older than the kept history: start over"}
}


def _json(raw: bytes) -> Response:
    return Response(content=raw, media_type="application/json")


@router.get("/trash", response_model=TrashPage, responses=errors(400, 401, 403, 429))
async def list_trash(
    user: ContactsUser,
    request: Request,
    skip: Skip = 0,
    limit: Limit = 20,
    cursor: Annotated[
        str | None, Query(max_length=200, description="A page's `next_cursor`: the page after (empty: the first page)")
    ] = None,
) -> Response:
    """Your deleted contacts, most recently deleted first, each with its `deleted_at`, in the contact list's page
    shape (`next_cursor` continues after the page). They are purged for good `TRASH_RETENTION_DAYS` (30) days
    after their deletion."""
    settings: Settings = request.app.state.settings
    async with read_session(request) as session:
        return _json(await trash.get_trash_json(session, settings, user.id, skip, limit, cursor))


@router.post("/{contact_id}/restore", response_model=ContactRead, responses=errors(401, 403, 429, 404))
async def restore_contact(contact_id: ContactId, user: ContactsUser, session: SessionDep) -> dict[str, object]:
    """Bring a contact back from the trash, whole (every field as it was, a new `etag`). A restore is never
    refused because another contact holds one of its emails meanwhile. A contact that is not in the trash (a
    restore retried after it succeeded) is answered as it is, unchanged. 404 if you have no such contact."""
    return await trash.restore_contact(session, contact_id, user.id)


@router.delete("/trash/{contact_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 403, 429, 404, 409))
async def purge_contact(contact_id: ContactId, user: ContactsUser, session: SessionDep) -> None:
    """Delete a contact of your trash for good. The change feed reports it as a delete. 409 `ContactNotInTrash`
    if the contact is live (delete it first: nothing is lost by mistake), 404 if you have no such contact."""
    await trash.purge_contact(session, contact_id, user.id)


@router.get("/changes", response_model=ChangeFeed, responses={**errors(400, 401, 403, 429), **_GONE})
async def list_changes(
    user: ContactsUser,
    request: Request,
    since: ChangeToken = None,
    limit: Annotated[int, Query(ge=1, le=MAX_CHANGES_PAGE)] = 100,
) -> Response:
    """What changed in your address book since `since`, oldest change first: `upsert` (created, changed or
    restored: `contact` is its current state) or `delete` (trashed or purged: `contact` is null). A contact
    changed several times appears once, in its latest state. Follow `next_token` until `has_more` is false, then
    keep it for the next poll: applying every change in order gives a copy equal to your address book, whatever
    was written meanwhile. Without `since`, every live contact as an upsert. A token older than the kept history
    (`SYNC_HISTORY_DAYS`, 30) answers 410 `ChangeTokenExpired`, another user's or a damaged one 400
    `InvalidChangeToken`: start over without `since`. Polling with nothing new costs no database query."""
    settings: Settings = request.app.state.settings
    async with read_session(request) as session:
        return _json(await changes.get_changes_json(session, settings, user.id, since or None, limit))


class _BatchRoute(APIRoute):
    """Renders an operation that does not validate as a 422 with its `index` (FastAPI reports it before anything
    ran). A failed operation is rendered by `batch_failure_response`, an exception handler of the application:
    caught there, outside the route's dependencies, the session dependency has rolled the batch back first."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(request)
            except RequestValidationError as exc:
                details = [
                    {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                    for e in exc.errors()
                ]
                loc = details[0]["loc"] if details else []
                if len(loc) < 3 or loc[:2] != ["body", "operations"] or not isinstance(loc[2], int):
                    raise
                return JSONResponse({"error": "ValidationError", "detail": details, "index": loc[2]}, 422)

        return handler


async def batch_failure_response(_: Request, exc: Exception) -> Response:
    """The application's handler of BatchOperationFailed: the failing operation's error, status and index."""
    if not isinstance(exc, BatchOperationFailed):  # pragma: no cover - registered for that class only
        raise exc
    return JSONResponse(exc.body(), exc.error.status_code, headers=exc.error.headers)


batch_router = APIRouter(prefix="/contacts", tags=["sync"], route_class=_BatchRoute)
_BATCH_ERRORS: dict[int | str, dict[str, Any]] = {
    status_code: {"model": BatchError, "description": f"{description}; with the failing operation's `index`"}
    for status_code, description in (
        (404, "An operation's contact was not found"),
        (409, "An operation's email belongs to another of your contacts"),
        (412, "An operation's `if_match` is not the contact's current `etag`"),
        (422, "An operation (or the batch) is invalid, or the Idempotency-Key was used for another request"),
    )
}


@batch_router.post(
    "/batch",
    response_model=BatchResponse,
    responses={**errors(401, 403, 429), **_BATCH_ERRORS},
)
async def apply_batch(
    body: BatchRequest,
    user: ContactsUser,
    session: SessionDep,
    request: Request,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Apply up to 100 writes at once, all or nothing: `create` (`contact`), `update` (`id`, `contact` with the
    fields to change, optional `if_match`), `delete` (`id`, optional `if_match`: to the trash). Answers 200 with
    each operation's `{index, status, contact}` in order. If an operation fails, nothing is applied and the batch
    answers that operation's status (404, 409, 412, 422) with `{"error", "detail", "index"}`. Each operation counts
    against your write rate limit. With an `Idempotency-Key`, a retry answers the first response again."""
    settings: Settings = request.app.state.settings
    limiter = rate_limiter(request)
    # One after another (the route's dependency counted the first): a burst of 99 concurrent calls could time out
    # against the limiter's storage and fall back to counting in process, where part of the burst would be lost.
    for _ in range(len(body.operations) - 1):
        await limiter.hit(settings.rate_limit_contacts_write, "contacts-write", str(user.id))

    async def run() -> tuple[int, Any]:
        return 200, await batch.apply_batch(session, user.id, body, fallback_region=settings.default_phone_region)

    if idempotency_key is None:
        _, result = await run()
        return _json(dumps(result))
    request_hash = idempotency.fingerprint("POST", "/contacts/batch", body.model_dump(mode="json", exclude_unset=True))
    outcome = await idempotency.once(session, user.id, idempotency_key, request_hash, run)
    return idempotency.response_of(outcome)
