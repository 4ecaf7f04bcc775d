"""Data factories and auth helpers for tests."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.tokens import access_token
from app.contacts import repository as contacts_repository
from app.contacts.models import Contact
from app.core.config import Settings
from app.core.db import commit
from app.core.security import hash_password
from app.users.models import Role, User

_sequence = itertools.count(1)
DEFAULT_PASSWORD = "correct horse battery staple"


async def make_user(
    db: AsyncSession,
    settings: Settings,
    *,
    email: str | None = None,
    password: str = DEFAULT_PASSWORD,
    role: Role = Role.user,
    verified: bool = True,
    active: bool = True,
) -> User:
    user = User(
        email=(email or f"user{next(_sequence)}@example.com").lower(),
        hashed_password=await hash_password(settings, password),
        role=role,
        is_verified=verified,
        is_active=active,
    )
    db.add(user)
    await commit(db)
    return user


async def make_contact(db: AsyncSession, user: User, **fields: Any) -> Contact:
    n = next(_sequence)
    values: dict[str, Any] = {"first_name": f"First{n}", "last_name": f"Last{n}", "email": f"contact{n}@example.com"}
    values.update(fields)
    # Through the repository, as the service adds one: it derives the search columns and counts the contact.
    contact = await contacts_repository.add(db, Contact(user_id=user.id, **values))
    await commit(db)
    return contact


def auth_headers(settings: Settings, user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token(settings, user.id, user.token_version)}"}
