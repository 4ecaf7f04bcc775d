"""SQL for users."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.users.models import User


class EmailTaken(Exception):
    pass


async def get_by_id(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == email.lower()))
    return result.scalar_one_or_none()


async def add(session: AsyncSession, user: User) -> User:
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise EmailTaken from exc
    return user
