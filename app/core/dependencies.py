"""Injectables that live on the application state (created by the lifespan). All async: FastAPI runs a plain
`def` dependency in its thread pool."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.core.email import Mailer
from app.core.storage import Storage


async def get_mailer(request: Request) -> Mailer:
    mailer: Mailer = request.app.state.mailer
    return mailer


async def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


MailerDep = Annotated[Mailer, Depends(get_mailer)]
StorageDep = Annotated[Storage, Depends(get_storage)]
