"""Batches of contact writes: every operation applied in one transaction, all or nothing, results in order."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import service
from app.contacts.sync_schemas import BatchRequest, CreateOperation, UpdateOperation
from app.core.errors import AppError


class BatchOperationFailed(Exception):
    """Operation `index` of a batch failed with `error`; the batch's transaction is rolled back. Not an AppError:
    the batch route renders it as the operation's own error, with its index."""

    def __init__(self, index: int, error: AppError) -> None:
        super().__init__(f"operation {index}: {error.code}")
        self.index = index
        self.error = error

    def body(self) -> dict[str, Any]:
        return {"error": self.error.code, "detail": self.error.detail, "index": self.index}


async def apply_batch(
    db: AsyncSession, user_id: int, batch: BatchRequest, *, fallback_region: str | None = None
) -> dict[str, Any]:
    """Apply every operation in order, each exactly as its own route would (the same checks: If-Match, email
    uniqueness, each a change with its own change number); the first that fails raises BatchOperationFailed and
    the caller rolls everything back. `fallback_region`: as for a single write (DEFAULT_PHONE_REGION)."""
    results: list[dict[str, Any]] = []
    for index, operation in enumerate(batch.operations):
        try:
            if isinstance(operation, CreateOperation):
                contact = await service.create_contact(db, user_id, operation.contact, fallback_region=fallback_region)
                results.append({"index": index, "status": 201, "contact": contact})
            elif isinstance(operation, UpdateOperation):
                contact = await service.update_contact(
                    db,
                    operation.id,
                    user_id,
                    operation.contact,
                    partial=True,
                    if_match=operation.if_match,
                    fallback_region=fallback_region,
                )
                results.append({"index": index, "status": 200, "contact": contact})
            else:
                await service.delete_contact(db, operation.id, user_id, if_match=operation.if_match)
                results.append({"index": index, "status": 204})
        except AppError as error:
            raise BatchOperationFailed(index, error) from error
    return {"results": results}
