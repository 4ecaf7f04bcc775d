"""The settings page (password change, default phone region) and the administrators' users page, over the users
feature's services: the same rules, rate limits and session endings as PUT /users/me/password and /admin/users."""

from __future__ import annotations

from typing import Annotated

import phonenumbers
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from app.auth import web_sessions
from app.auth.schemas import Role
from app.core.config import SettingsDep
from app.core.db import SessionDep, commit
from app.core.dependencies import StorageDep
from app.core.errors import AppError, PayloadTooLarge
from app.core.rate_limit import enforce, request_ip
from app.core.schemas import MAX_ID
from app.users import passwords
from app.users import service as users_service
from app.users.schemas import AdminUserUpdate, ChangePasswordRequest, UserSettingsUpdate
from app.web.rendering import field_errors, redirect, render, words_for
from app.web.security import AdminViewer, CheckedForm, PageViewer, Viewer, set_session_cookie

router = APIRouter(include_in_schema=False)

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
USERS_PER_PAGE = 50


def _text(form: object, name: str, limit: int = 1100) -> str:
    value = form.get(name) if hasattr(form, "get") else None
    return value[:limit] if isinstance(value, str) else ""


def _settings_page(request: Request, viewer: Viewer, status_code: int = 200, **context: object) -> Response:
    values = {"regions": REGIONS, "region": viewer.user.default_region or ""} | context
    return render(request, "settings.html", values, viewer=viewer, status_code=status_code)


@router.get("/settings")
async def settings_page(request: Request, viewer: PageViewer) -> Response:
    """Your settings: password, avatar, default phone region."""
    return _settings_page(request, viewer)


@router.post("/settings/password")
async def change_password(
    request: Request, viewer: PageViewer, form: CheckedForm, session: SessionDep, settings: SettingsDep
) -> Response:
    """Every other session ends (the account's token_version moves on); this browser gets a new session."""
    try:
        body = ChangePasswordRequest(
            current_password=_text(form, "current_password"), new_password=_text(form, "new_password")
        )
    except ValidationError as error:
        labels = {"current_password": "Your current password", "new_password": "The new password"}
        return _settings_page(request, viewer, 400, errors=field_errors(error, labels))
    try:
        await enforce(request, settings.rate_limit_password_change_ip, "password-change-ip", request_ip(request))
        await enforce(request, settings.rate_limit_password_change_user, "password-change-user", str(viewer.user.id))
        await passwords.change_password(session, settings, viewer.user.id, body.current_password, body.new_password)
    except AppError as error:
        where = "current_password" if error.code == "WrongCurrentPassword" else "form"
        return _settings_page(request, viewer, error.status_code, errors={where: words_for(error.code)})
    account = await users_service.get_user(session, viewer.user.id)
    token = await web_sessions.start(session, settings, account)
    await commit(session)
    response = redirect("/settings?notice=password-changed")
    set_session_cookie(request, response, token)
    return response


@router.post("/settings/region")
async def change_region(request: Request, viewer: PageViewer, form: CheckedForm, session: SessionDep) -> Response:
    """Set (or clear) the region your contacts' national phone numbers are read in."""
    region = _text(form, "default_region", 8)
    try:
        body = UserSettingsUpdate(default_region=region or None)
    except ValidationError:
        message = "Choose a region from the list."
        return _settings_page(request, viewer, 400, region=region, errors={"default_region": message})
    await users_service.update_settings(session, viewer.user.id, body.model_dump())
    return redirect("/settings?notice=settings-saved")


@router.post("/settings/avatar")
async def upload_avatar(
    request: Request,
    viewer: PageViewer,
    form: CheckedForm,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
) -> Response:
    """The same checks, image pool and per-user limit as PUT /users/me/avatar."""
    upload = form.get("avatar")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _settings_page(request, viewer, 400, errors={"avatar": "Choose an image file first."})
    try:
        await enforce(request, settings.rate_limit_avatar_upload, "avatar-upload", str(viewer.user.id))
        data = await upload.read(settings.avatar_max_bytes + 1)
        if len(data) > settings.avatar_max_bytes:
            raise PayloadTooLarge
        await users_service.set_avatar(session, settings, storage, viewer.user.id, data)
    except AppError as error:
        where = "form" if error.code in ("RateLimited", "ImagePoolBusy") else "avatar"
        limit = settings.avatar_max_bytes // (1024 * 1024) or 1
        words = AVATAR_WORDS.get(error.code, "").format(limit=limit) or words_for(error.code, error.detail)
        return _settings_page(request, viewer, error.status_code, errors={where: words})
    return redirect("/settings?notice=settings-saved")


@router.post("/settings/avatar/remove")
async def remove_avatar(viewer: PageViewer, form: CheckedForm, session: SessionDep, storage: StorageDep) -> Response:
    """Remove your avatar."""
    await users_service.remove_avatar(session, storage, viewer.user.id)
    return redirect("/settings?notice=settings-saved")


AVATAR_WORDS = {
    "NotAnImage": "This file is not an image we can use: choose a PNG, JPEG, WebP or GIF picture.",
    "ImageTooLarge": "This picture has too many pixels: choose a smaller one.",
    "PayloadTooLarge": "This file is too large: choose a picture of at most {limit} MB.",
    "ImagePoolBusy": "We are busy processing pictures: please try again in a moment.",
}


@router.get("/admin/users")
async def users_page(
    request: Request,
    viewer: AdminViewer,
    session: SessionDep,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    """Every account, for administrators."""
    users, total = await users_service.list_users(session, skip, USERS_PER_PAGE, None)
    context = {"users": users, "total": total, "skip": skip, "per_page": USERS_PER_PAGE, "roles": list(Role)}
    return render(request, "admin_users.html", context, viewer=viewer)


@router.post("/admin/users/{user_id}")
async def update_user(
    request: Request,
    viewer: AdminViewer,
    form: CheckedForm,
    session: SessionDep,
    user_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> Response:
    """Role and activation: either change ends that account's sessions, its open pages included."""
    try:
        body = AdminUserUpdate(role=_text(form, "role", 16) or None, is_active=form.get("is_active") == "on")
        await users_service.admin_update_user(
            session, viewer.user.id, user_id, body.model_dump(exclude_unset=True, exclude_none=True)
        )
    except (ValidationError, AppError) as error:
        message = words_for(error.code) if isinstance(error, AppError) else "Choose a role from the list."
        users, total = await users_service.list_users(session, 0, USERS_PER_PAGE, None)
        context = {"users": users, "total": total, "skip": 0, "per_page": USERS_PER_PAGE, "roles": list(Role)}
        status = error.status_code if isinstance(error, AppError) else 400
        return render(
            request, "admin_users.html", context | {"errors": {"form": message}}, viewer=viewer, status_code=status
        )
    return redirect("/admin/users?notice=user-updated")
