from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, status

from app.auth import service
from app.auth.schemas import LoginForm, RefreshRequest, TokenPair
from app.core.config import SettingsDep
from app.core.db import SessionDep
from app.core.openapi import errors
from app.users import service as users_service
from app.users.schemas import UserCreate, UserRead

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=UserRead, responses=errors(409))
async def register(body: UserCreate, session: SessionDep, settings: SettingsDep) -> UserRead:
    """Create an account. The new user has the role `user` and is not yet verified."""
    user = await users_service.register_user(session, settings, body.email, body.password)
    return UserRead.model_validate(user)


@router.post("/login", response_model=TokenPair, responses=errors(401, 403))
async def login(
    session: SessionDep,
    settings: SettingsDep,
    form: Annotated[LoginForm, Form()],
) -> TokenPair:
    """Log in with the OAuth2 password form (`username` is the email). Unknown email and wrong password give
    the same 401."""
    return await service.login(session, settings, form.username, form.password)


@router.post("/refresh", response_model=TokenPair, responses=errors(401))
async def refresh(body: RefreshRequest, session: SessionDep, settings: SettingsDep) -> TokenPair:
    """Exchange a refresh token for a new pair. Each refresh token works once; reusing one ends its sessions."""
    return await service.refresh(session, settings, body.refresh_token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401))
async def logout(body: RefreshRequest, session: SessionDep, settings: SettingsDep) -> None:
    """End the session this refresh token belongs to."""
    await service.logout(session, settings, body.refresh_token)
