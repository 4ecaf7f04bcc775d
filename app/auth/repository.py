"""SQL for refresh-token records."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import RefreshToken
from app.core.db import utcnow


async def add(db: AsyncSession, jti: str, family_id: str, user_id: int, expires_at: datetime) -> None:
    db.add(RefreshToken(jti=jti, family_id=family_id, user_id=user_id, expires_at=expires_at))
    await db.flush()


async def get_for_update(db: AsyncSession, jti: str) -> RefreshToken | None:
    """The record, locked on PostgreSQL so that two concurrent uses of one token cannot both rotate it."""
    query = select(RefreshToken).where(RefreshToken.jti == jti)
    if db.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return (await db.execute(query)).scalar_one_or_none()


async def mark_used(db: AsyncSession, record: RefreshToken) -> None:
    record.used_at = utcnow()
    await db.flush()


async def revoke_family(db: AsyncSession, family_id: str) -> None:
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def revoke_all_for_user(db: AsyncSession, user_id: int) -> None:
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
