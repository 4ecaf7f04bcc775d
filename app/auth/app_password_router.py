"""The routes of your app passwords (/users/me/app-passwords): make one per device, see when each was last used,
revoke one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from app.auth import app_passwords
from app.auth.principal import CurrentUser
from app.auth.schemas import AppPasswordCreate, AppPasswordCreated, AppPasswordRead
from app.core.config import SettingsDep
from app.core.db import SessionDep
from app.core.openapi import errors
from app.core.schemas import MAX_ID

router = APIRouter(prefix="/users/me/app-passwords", tags=["app passwords"])
AppPasswordId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=AppPasswordCreated, responses=errors(401, 403, 409)
)
async def create_app_password(
    body: AppPasswordCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> AppPasswordCreated:
    """Make an app password for a device or program (CardDAV: your email as the user name, this as the
    password). The password is in this answer only; it ends when your password changes or you revoke it."""
    row, password = await app_passwords.create(session, settings, user, body.name)
    return AppPasswordCreated(
        id=row.id, name=row.name, created_at=row.created_at, last_used_at=row.last_used_at, password=password
    )


@router.get("", response_model=list[AppPasswordRead], responses=errors(401, 403))
async def list_app_passwords(user: CurrentUser, session: SessionDep) -> list[AppPasswordRead]:
    """Your live app passwords, oldest first, each with when it was last used (to the minute); never the
    password."""
    return [AppPasswordRead.model_validate(row) for row in await app_passwords.list_live(session, user)]


@router.delete("/{app_password_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 403, 404))
async def revoke_app_password(app_password_id: AppPasswordId, user: CurrentUser, session: SessionDep) -> None:
    """Revoke an app password: the device using it is refused from its next request."""
    await app_passwords.revoke(session, user, app_password_id)
