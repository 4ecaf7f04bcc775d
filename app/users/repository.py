"""SQL for users."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
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


async def list_page(session: AsyncSession, skip: int, limit: int, role: str | None) -> tuple[list[User], int]:
    where = [User.role == role] if role else []
    total = await session.scalar(select(func.count()).select_from(User).where(*where))
    result = await session.execute(select(User).where(*where).order_by(User.id).offset(skip).limit(limit))
    return list(result.scalars()), int(total or 0)


async def remove(session: AsyncSession, user: User) -> None:
    await session.delete(user)
    await session.flush()


async def replace_password(session: AsyncSession, user: User, expected_hash: str, new_hash: str) -> bool:
    """Set the password only if it is still `expected_hash` (two concurrent resets or changes cannot both
    succeed), bumping token_version to end sessions. False if it had changed meanwhile."""
    result = await session.execute(
        update(User)
        .where(User.id == user.id, User.hashed_password == expected_hash)
        .values(hashed_password=new_hash, token_version=User.token_version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        return False
    await session.refresh(user)
    return True
