"""The users table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, Index, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.auth.schemas import Role
from app.core.db import Base, BigIntId, UTCDateTime, utcnow

__all__ = ["Role", "User"]


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    # Stored lower-cased, so uniqueness and look-ups are case-insensitive.
    email: Mapped[str] = mapped_column(String(320))
    hashed_password: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.user, server_default=Role.user)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    is_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    avatar_url: Mapped[str | None] = mapped_column(String(500), default=None)
    # ISO 3166 alpha-2: the region national phone numbers of this user's contacts are read in (else the
    # DEFAULT_PHONE_REGION setting).
    default_region: Mapped[str | None] = mapped_column(String(2), default=None)
    # Bumped whenever existing sessions must end (password change, role change, deactivation).
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    __table_args__ = (
        Index("uq_users_email", "email", unique=True),
        Index("ix_users_role_id", "role", "id"),
        CheckConstraint("role in ('user', 'admin')", name="role"),
        {"sqlite_autoincrement": True},
    )
