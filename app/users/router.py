"""The routes of one's own account (/users/me) and the administrators' (/admin/users)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Path, Query, Request, UploadFile, status

from app.auth.principal import AdminUser, CurrentUser
from app.auth.schemas import AuthUser, TokenPair
from app.core.config import SettingsDep
from app.core.db import SessionDep
from app.core.dependencies import StorageDep
from app.core.errors import PayloadTooLarge
from app.core.openapi import errors
from app.core.rate_limit import enforce, request_ip
from app.core.schemas import MAX_ID, MAX_PAGE_SIZE, MAX_SKIP, Page
from app.users import passwords, service
from app.users.models import Role
from app.users.schemas import AdminUserUpdate, ChangePasswordRequest, UserRead, UserSettingsRead, UserSettingsUpdate

router = APIRouter(prefix="/users", tags=["users"])
admin_router = APIRouter(prefix="/admin/users", tags=["admin"])

UserId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.get("/me", response_model=UserSettingsRead, responses=errors(401, 403))
async def read_me(user: CurrentUser) -> AuthUser:
    """The authenticated user, with your own settings (`default_region`)."""
    return user


@router.patch("/me", response_model=UserSettingsRead, responses=errors(401, 403))
async def update_me(body: UserSettingsUpdate, user: CurrentUser, session: SessionDep) -> UserSettingsRead:
    """Change your own settings (only those sent): `default_region` (ISO 3166 alpha-2, e.g. `US`), the region
    national phone numbers of your contacts are read in when written; null: the server's DEFAULT_PHONE_REGION."""
    changes = body.model_dump(exclude_unset=True)
    return UserSettingsRead.model_validate(await service.update_settings(session, user.id, changes))


@router.put("/me/password", response_model=TokenPair, responses=errors(400, 401, 403, 429))
async def change_password(
    body: ChangePasswordRequest, request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> TokenPair:
    """Change your password. Every existing session ends; the response holds a new pair for this one. Limited
    per user and per client address (each attempt checks the current password: a stolen access token must not
    be a way to guess it)."""
    await enforce(request, settings.rate_limit_password_change_ip, "password-change-ip", request_ip(request))
    await enforce(request, settings.rate_limit_password_change_user, "password-change-user", str(user.id))
    return await passwords.change_password(session, settings, user.id, body.current_password, body.new_password)


@router.put("/me/avatar", response_model=UserRead, responses=errors(401, 403, 413, 415, 429))
async def upload_avatar(
    file: Annotated[UploadFile, File(description="A PNG, JPEG, WebP or GIF image")],
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
) -> UserRead:
    """Upload an avatar; it is checked, resized and served from `avatar_url`. At most AVATAR_MAX_PIXELS pixels
    (refused from the header, before decoding) and RATE_LIMIT_AVATAR_UPLOAD uploads per user; 503 with
    Retry-After while the image pool is full."""
    await enforce(request, settings.rate_limit_avatar_upload, "avatar-upload", str(user.id))
    data = await file.read(settings.avatar_max_bytes + 1)
    if len(data) > settings.avatar_max_bytes:
        raise PayloadTooLarge(f"The image must be at most {settings.avatar_max_bytes} bytes.")
    updated = await service.set_avatar(session, settings, storage, user.id, data)
    return UserRead.model_validate(updated)


@router.delete("/me/avatar", response_model=UserRead, responses=errors(401, 403))
async def delete_avatar(user: CurrentUser, session: SessionDep, storage: StorageDep) -> UserRead:
    """Remove your avatar."""
    return UserRead.model_validate(await service.remove_avatar(session, storage, user.id))


@admin_router.get("", response_model=Page[UserRead], responses=errors(401, 403))
async def list_users(
    _: AdminUser,
    session: SessionDep,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    role: Role | None = None,
) -> Page[UserRead]:
    """Every account, in id order, optionally only those of one role. Administrators only."""
    users, total = await service.list_users(session, skip, limit, role)
    return Page[UserRead](items=[UserRead.model_validate(u) for u in users], total=total, skip=skip, limit=limit)


@admin_router.get("/{user_id}", response_model=UserRead, responses=errors(401, 403, 404))
async def read_user(user_id: UserId, _: AdminUser, session: SessionDep) -> UserRead:
    """One account. Administrators only."""
    return UserRead.model_validate(await service.get_user(session, user_id))


@admin_router.patch("/{user_id}", response_model=UserRead, responses=errors(401, 403, 404))
async def update_user(user_id: UserId, body: AdminUserUpdate, admin: AdminUser, session: SessionDep) -> UserRead:
    """Set another account's role or active flag; either change ends that account's sessions at once."""
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    return UserRead.model_validate(await service.admin_update_user(session, admin.id, user_id, changes))


@admin_router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 403, 404))
async def delete_user(user_id: UserId, admin: AdminUser, session: SessionDep, storage: StorageDep) -> None:
    """Delete another account, all its contacts and its avatar."""
    await service.delete_user(session, storage, admin.id, user_id)
