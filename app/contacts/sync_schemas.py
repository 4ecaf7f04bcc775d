"""What the sync routes speak: the trash's page, a page of the change feed, and a batch of writes with its
results."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.contacts.schemas import ContactCreate, ContactPage, ContactRead, ContactUpdate
from app.core.schemas import MAX_ID, StrictModel

MAX_BATCH_OPERATIONS = 100


class TrashedContactRead(ContactRead):
    """A contact in the trash: the contact as it was, and when it was deleted."""

    deleted_at: datetime


def trashed_json(row: Any) -> dict[str, Any]:
    return TrashedContactRead.model_validate(row).model_dump(mode="json")


class TrashPage(ContactPage):
    """A page of the trash, most recently deleted first (the shape of the contact list's pages)."""

    items: list[TrashedContactRead]  # type: ignore[assignment]


class Change(BaseModel):
    """One contact's latest change: `upsert` with its current state, or `delete` (trashed or purged)."""

    id: int
    uid: str
    op: Literal["upsert", "delete"]
    contact: ContactRead | None


class ChangeFeed(BaseModel):
    changes: list[Change]
    next_token: str = Field(description="Where the next page (or the next poll) starts: pass it as `since`.")
    has_more: bool = Field(description="True while further changes wait: ask again with `next_token` at once.")


BatchContactId = Annotated[int, Field(ge=1, le=MAX_ID, description="The contact's id")]
IfMatch = Annotated[
    str,
    StringConstraints(max_length=100),
    Field(description="The contact's `etag` as you last read it: the operation fails with 412 if it changed since."),
]


class CreateOperation(StrictModel):
    op: Literal["create"]
    contact: ContactCreate


class UpdateOperation(StrictModel):
    """Change only the fields sent (as PATCH does)."""

    op: Literal["update"]
    id: BatchContactId
    if_match: IfMatch | None = None
    contact: ContactUpdate


class DeleteOperation(StrictModel):
    """Move the contact to the trash (as DELETE does)."""

    op: Literal["delete"]
    id: BatchContactId
    if_match: IfMatch | None = None


Operation = Annotated[CreateOperation | UpdateOperation | DeleteOperation, Field(discriminator="op")]


class BatchRequest(StrictModel):
    operations: list[Operation] = Field(min_length=1, max_length=MAX_BATCH_OPERATIONS)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "operations": [
                        {"op": "create", "contact": {"first_name": "Ada", "emails": [{"value": "ada@example.com"}]}},
                        {"op": "update", "id": 12, "if_match": '"12-3"', "contact": {"favorite": True}},
                        {"op": "delete", "id": 15},
                    ]
                }
            ]
        },
    )


class BatchResult(BaseModel):
    index: int
    status: int = Field(description="201 for a create, 200 for an update, 204 for a delete")
    contact: ContactRead | None = None


class BatchResponse(BaseModel):
    results: list[BatchResult]


class BatchError(BaseModel):
    """A failed batch: the first operation that failed, its error, and nothing applied."""

    error: str
    detail: object
    index: int | None = Field(
        default=None,
        description="The failing operation's position in `operations` (absent when the batch itself is refused)",
    )
