"""The user lifecycle: sign-up and email verification, look-ups through the cache, role and activation changes,
deletion and avatars. Every write invalidates the `user:{id}` key around its commit."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import service as sessions
from app.auth.schemas import AuthUser, Role
from app.core.cache import Kind, cache
from app.core.config import Settings
from app.core.db import after_commit
from app.core.email import Mailer
from app.core.errors import AppError, Conflict, Forbidden, NotFound
from app.core.events import user_deleting
from app.core.security import InvalidToken, TokenPurpose, decode_token, hash_password
from app.core.storage import Storage
from app.users import repository
from app.users.avatars import image_pool, make_avatar
from app.users.mail import verification_mail
from app.users.models import User


class EmailAlreadyRegistered(Conflict):
    """A user with this email already exists."""

    code = "EmailAlreadyRegistered"


class UserNotFound(NotFound):
    """User not found."""

    code = "UserNotFound"


class InvalidVerificationToken(AppError):
    """The verification link is invalid or expired; request a new one."""

    code = "InvalidVerificationToken"
    status_code = 400


class CannotChangeOwnAccount(Forbidden):
    """Administrators cannot change their own role or active flag, nor delete themselves here."""

    code = "CannotChangeOwnAccount"


SESSION_ENDING_FIELDS = frozenset({"hashed_password", "role", "is_active"})


def auth_user(user: User) -> AuthUser:
    return AuthUser.model_validate(user)


# -- look-ups ------------------------------------------------------------------------------------------------


async def get_user_by_id_with_cache(
    db: AsyncSession, user_id: int, *, prefetched: bytes | None = None
) -> AuthUser | None:
    """The user, read through the `user:{id}` cache key (only non-secret fields are cached)."""

    async def load() -> dict[str, Any] | None:
        user = await repository.get_by_id(db, user_id)
        return auth_user(user).model_dump(mode="json") if user else None

    raw = await cache.read_through(
        Kind.user, cache.user_key(user_id), load, cache.settings.cache_user_ttl, prefetched=prefetched
    )
    if raw is None:
        return None
    try:
        user = AuthUser.model_validate_json(raw)
    except ValueError:
        user = None
    if user is not None and user.id == user_id:
        return user
    # Something other than our read-through wrote this key (e.g. a partial `cache_user`): ignore it.
    loaded = await load()
    return AuthUser.model_validate(loaded) if loaded else None


class UserAccounts:
    """The users table as auth sees it (app.auth.accounts.Accounts); the application wires it in."""

    async def principal(
        self, session: AsyncSession, user_id: int, *, prefetched: bytes | None = None
    ) -> AuthUser | None:
        return await get_user_by_id_with_cache(session, user_id, prefetched=prefetched)

    async def by_id(self, session: AsyncSession, user_id: int) -> User | None:
        return await repository.get_by_id(session, user_id)

    async def by_email(self, session: AsyncSession, email: str) -> User | None:
        return await repository.get_by_email(session, email)


accounts = UserAccounts()


async def get_user_by_email(db: AsyncSession, email: str) -> User | None:
    return await repository.get_by_email(db, email)


async def get_user_by_id(db: AsyncSession, user_id: int) -> User | None:
    return await repository.get_by_id(db, user_id)


async def get_user(db: AsyncSession, user_id: int) -> User:
    user = await repository.get_by_id(db, user_id)
    if user is None:
        raise UserNotFound
    return user


async def list_users(db: AsyncSession, skip: int, limit: int, role: Role | None) -> tuple[list[User], int]:
    return await repository.list_page(db, skip, limit, role.value if role else None)


# -- writes --------------------------------------------------------------------------------------------------


def invalidate_user_around_commit(db: AsyncSession, user_id: int) -> None:
    """Every change to a user invalidates `user:{id}` around the commit (tombstone before, delete after)."""
    cache.invalidate_around_commit(db, cache.user_key(user_id))


async def register_user(db: AsyncSession, settings: Settings, email: str, password: str) -> User:
    email = email.lower()
    if await repository.get_by_email(db, email) is not None:
        raise EmailAlreadyRegistered
    hashed = await hash_password(settings, password)
    try:
        return await repository.add(db, User(email=email, hashed_password=hashed, role=Role.user))
    except repository.EmailTaken as exc:
        raise EmailAlreadyRegistered from exc


async def register(db: AsyncSession, settings: Settings, mailer: Mailer, email: str, password: str) -> User:
    """Create an account (role `user`, not yet verified) and send it a verification link."""
    user = await register_user(db, settings, email, password)
    mailer.send_later(verification_mail(settings, user))
    return user


async def verify_email(db: AsyncSession, settings: Settings, token: str) -> User:
    try:
        claims = decode_token(settings, token, TokenPurpose.verify_email)
    except InvalidToken as exc:
        raise InvalidVerificationToken from exc
    user = await repository.get_by_id(db, int(claims["sub"]))
    if user is None or claims.get("email") != user.email:
        raise InvalidVerificationToken
    if not user.is_verified:
        await update_user(db, user, is_verified=True)
    return user


async def resend_verification(db: AsyncSession, settings: Settings, mailer: Mailer, email: str) -> None:
    """Always succeeds from the caller's view; mails only an existing, active, unverified account."""
    user = await repository.get_by_email(db, email)
    if user is not None and user.is_active and not user.is_verified:
        mailer.send_later(verification_mail(settings, user))


async def update_user(db: AsyncSession, user: User, **changes: Any) -> User:
    """Apply `changes` to `user`. A change of the password, the role or the active flag ends every session of
    the account: its access tokens die with the token_version bump, its refresh-token records are revoked."""
    ends_sessions = any(
        getattr(user, name) != value for name, value in changes.items() if name in SESSION_ENDING_FIELDS
    )
    for name, value in changes.items():
        setattr(user, name, value)
    if ends_sessions:
        user.token_version += 1
        await sessions.end_sessions(db, user.id)
    await db.flush()
    invalidate_user_around_commit(db, user.id)
    return user


async def update_settings(db: AsyncSession, user_id: int, changes: dict[str, Any]) -> User:
    """A user changes their own settings (`default_region`)."""
    return await update_user(db, await get_user(db, user_id), **changes)


async def admin_update_user(db: AsyncSession, actor_id: int, user_id: int, changes: dict[str, Any]) -> User:
    """An administrator sets another account's role or active flag (either change ends its sessions)."""
    if user_id == actor_id and changes:
        raise CannotChangeOwnAccount
    return await update_user(db, await get_user(db, user_id), **changes)


async def delete_user(db: AsyncSession, storage: Storage, actor_id: int, user_id: int) -> None:
    """Delete a user and everything theirs: features holding data of the user (contacts) are told first, so that
    they invalidate their own cache keys around the commit; the avatar file is deleted after the commit (a
    rolled-back deletion keeps both)."""
    if user_id == actor_id:
        raise CannotChangeOwnAccount
    user = await get_user(db, user_id)
    avatar_url = user.avatar_url
    await user_deleting.send(db, user_id)
    await repository.remove(db, user)
    invalidate_user_around_commit(db, user_id)
    if avatar_url is not None:
        after_commit(db, lambda: _delete_stored(storage, avatar_url))


# -- avatars -------------------------------------------------------------------------------------------------


async def set_avatar(db: AsyncSession, settings: Settings, storage: Storage, user_id: int, data: bytes) -> User:
    """Check, resize and store `data` as the user's avatar, on the image pool (ImagePoolBusy when it is full)."""
    user = await get_user(db, user_id)
    pool = image_pool(settings.avatar_workers, settings.avatar_queue)
    image = await pool.run(make_avatar, data, settings.avatar_size, settings.avatar_max_pixels)
    old_url = user.avatar_url
    url = await storage.save(f"avatars/{user_id}-{secrets.token_hex(8)}.webp", image)
    await update_user(db, user, avatar_url=url)
    after_commit(db, lambda: _delete_stored(storage, old_url))
    return user


async def remove_avatar(db: AsyncSession, storage: Storage, user_id: int) -> User:
    user = await get_user(db, user_id)
    old_url = user.avatar_url
    if old_url is not None:
        await update_user(db, user, avatar_url=None)
        after_commit(db, lambda: _delete_stored(storage, old_url))
    return user


async def _delete_stored(storage: Storage, url: str | None) -> None:
    name = storage.name_from_url(url) if url else None
    if name:
        await storage.delete(name)
