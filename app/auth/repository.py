"""SQL for the auth records: refresh tokens and app passwords."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import AppPassword, RefreshToken
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


# -- app passwords ------------------------------------------------------------------------------------------------


async def add_app_password(db: AsyncSession, user_id: int, name: str, digest: str, token_version: int) -> AppPassword:
    row = AppPassword(user_id=user_id, name=name, digest=digest, token_version=token_version)
    db.add(row)
    await db.flush()
    return row


async def live_app_passwords(db: AsyncSession, user_id: int, token_version: int) -> list[AppPassword]:
    """The user's app passwords made under their current token version (older ones are dead), oldest first."""
    query = (
        select(AppPassword)
        .where(AppPassword.user_id == user_id, AppPassword.token_version == token_version)
        .order_by(AppPassword.id)
    )
    return list((await db.execute(query)).scalars())


async def app_password_by_digest(db: AsyncSession, digest: str) -> AppPassword | None:
    return (await db.execute(select(AppPassword).where(AppPassword.digest == digest))).scalar_one_or_none()


async def delete_app_password(db: AsyncSession, user_id: int, app_password_id: int) -> bool:
    result = await db.execute(
        delete(AppPassword).where(AppPassword.id == app_password_id, AppPassword.user_id == user_id)
    )
    return bool(getattr(result, "rowcount", 0))


async def touch_app_password(db: AsyncSession, app_password_id: int, before: datetime) -> None:
    """Record a use, at most once per interval: only if the last recorded use is older than `before`."""
    await db.execute(
        update(AppPassword)
        .where(
            AppPassword.id == app_password_id,
            (AppPassword.last_used_at.is_(None)) | (AppPassword.last_used_at < before),
        )
        .values(last_used_at=utcnow())
    )
