"""Users: registration, look-ups through the cache, and changes that invalidate it."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import service as contacts_service
from app.core.cache import Kind, cache
from app.core.config import Settings
from app.core.db import after_commit
from app.core.errors import Conflict, Forbidden, NotFound
from app.core.security import hash_password
from app.core.storage import Storage
from app.users import repository
from app.users.avatars import image_pool, make_avatar
from app.users.models import Role, User
from app.users.schemas import AuthUser


class EmailAlreadyRegistered(Conflict):
    """A user with this email already exists."""


class UserNotFound(NotFound):
    """User not found."""


def auth_user(user: User) -> AuthUser:
    return AuthUser.model_validate(user)


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


async def replace_password(db: AsyncSession, user: User, expected_hash: str, new_hash: str) -> bool:
    """Compare-and-set the password hash; on success every session of the user ends."""
    if not await repository.replace_password(db, user, expected_hash, new_hash):
        return False
    invalidate_user_around_commit(db, user.id)
    return True


async def get_user_by_email(db: AsyncSession, email: str) -> User | None:
    return await repository.get_by_email(db, email)


async def get_user(db: AsyncSession, user_id: int) -> User:
    user = await repository.get_by_id(db, user_id)
    if user is None:
        raise UserNotFound
    return user


async def update_user(db: AsyncSession, user: User, **changes: Any) -> User:
    """Apply `changes` to `user`; sessions end when the password, role or active flag changes."""
    ends_sessions = any(
        name in changes and getattr(user, name) != value
        for name, value in changes.items()
        if name in ("hashed_password", "role", "is_active")
    )
    for name, value in changes.items():
        setattr(user, name, value)
    if ends_sessions:
        user.token_version += 1
    await db.flush()
    invalidate_user_around_commit(db, user.id)
    return user


async def get_user_by_id(db: AsyncSession, user_id: int) -> User | None:
    return await repository.get_by_id(db, user_id)


# -- administration ------------------------------------------------------------------------------------------


class CannotChangeOwnAccount(Forbidden):
    """Administrators cannot change their own role or active flag, nor delete themselves here."""


async def list_users(db: AsyncSession, skip: int, limit: int, role: Role | None) -> tuple[list[User], int]:
    return await repository.list_page(db, skip, limit, role.value if role else None)


async def admin_update_user(db: AsyncSession, actor_id: int, user_id: int, changes: dict[str, Any]) -> User:
    """Set role and/or is_active of another user; a change of either ends that user's sessions."""
    if user_id == actor_id and changes:
        raise CannotChangeOwnAccount
    user = await get_user(db, user_id)
    return await update_user(db, user, **changes)


async def delete_user(db: AsyncSession, storage: Storage, actor_id: int, user_id: int) -> None:
    """Delete a user and their contacts; every cache key of theirs is invalidated and their avatar file deleted
    after the commit (a rolled-back deletion keeps both)."""
    if user_id == actor_id:
        raise CannotChangeOwnAccount
    user = await get_user(db, user_id)
    avatar_url = user.avatar_url
    contact_ids = await contacts_service.contact_ids_of_user(db, user_id)
    await repository.remove(db, user)
    keys = [cache.user_key(user_id), cache.contacts_key(user_id)]
    keys += [cache.contact_key(contact_id, user_id) for contact_id in contact_ids]
    cache.invalidate_around_commit(db, *keys)
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
