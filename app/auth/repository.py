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


async def get(db: AsyncSession, jti: str) -> RefreshToken | None:
    return (await db.execute(select(RefreshToken).where(RefreshToken.jti == jti))).scalar_one_or_none()


async def mark_used(db: AsyncSession, jti: str) -> bool:
    """Spend the token if it is still live: a compare-and-set, so that of two concurrent uses exactly one wins on
    every database (the loser's UPDATE waits for the winner's row lock, then matches no row). False if the token
    was already used or revoked."""
    result = await db.execute(
        update(RefreshToken)
        .where(RefreshToken.jti == jti, RefreshToken.used_at.is_(None), RefreshToken.revoked_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


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
