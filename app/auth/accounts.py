"""The accounts that auth checks, as it sees them: a protocol that the users feature implements and the application
wires in (`app.state.accounts`), so that auth never imports users."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from app.auth.schemas import AuthUser


class Account(Protocol):
    """What login and token refresh read of an account (fresh from the database)."""

    @property
    def id(self) -> int: ...

    @property
    def hashed_password(self) -> str: ...

    @property
    def is_active(self) -> bool: ...

    @property
    def is_verified(self) -> bool: ...

    @property
    def token_version(self) -> int: ...


class Accounts(Protocol):
    async def principal(
        self, session: AsyncSession, user_id: int, *, prefetched: bytes | None = None
    ) -> AuthUser | None:
        """The account as a principal, read through the cache (`prefetched`: its cached bytes, if already read)."""
        ...

    async def by_id(self, session: AsyncSession, user_id: int) -> Account | None: ...

    async def by_email(self, session: AsyncSession, email: str) -> Account | None: ...


def accounts_of(connection: HTTPConnection) -> Accounts:
    accounts: Accounts = connection.app.state.accounts
    return accounts
