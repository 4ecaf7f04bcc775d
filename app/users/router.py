from __future__ import annotations

from fastapi import APIRouter

from app.auth.dependencies import CurrentUser
from app.core.openapi import errors
from app.users.schemas import UserRead

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me", response_model=UserRead, responses=errors(401, 403))
async def read_me(user: CurrentUser) -> UserRead:
    """The authenticated user."""
    return user
