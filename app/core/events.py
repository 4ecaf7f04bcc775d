"""Notifications between features: a lower feature announces, a higher one subscribes (wired by the application),
so that neither imports the other. One event so far: a user is about to be deleted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

UserHandler = Callable[[AsyncSession, int], Awaitable[None]]


class UserEvent:
    """Handlers run in the order they subscribed, in the session (the transaction) of the change."""

    def __init__(self) -> None:
        self._handlers: list[UserHandler] = []

    def subscribe(self, handler: UserHandler) -> None:
        if handler not in self._handlers:
            self._handlers.append(handler)

    async def send(self, session: AsyncSession, user_id: int) -> None:
        for handler in list(self._handlers):
            await handler(session, user_id)


# Sent before a user's row is deleted (its data goes with it by ON DELETE CASCADE): invalidate what you cached.
user_deleting = UserEvent()
