"""Login throttling that slows password guessing without letting anyone lock an account's owner out.

Failed logins are counted per (account, client network) and per account. A network that failed too often for
an account is refused for it (RATE_LIMIT_LOGIN_ACCOUNT_NETWORK). Once the account's failure budget is spent
(RATE_LIMIT_LOGIN_ACCOUNT, a guessing campaign from many networks), every network that failed for it recently is
refused too; a network with no recent failure for the account still has its password checked, so the owner
logging in from their own network gets in. Successful logins count nothing here (RATE_LIMIT_LOGIN_IP counts every
attempt per network, before this)."""

from __future__ import annotations

from app.core.config import Settings
from app.core.errors import RateLimited
from app.core.rate_limit import RateLimiter


class LoginThrottle:
    def __init__(self, limiter: RateLimiter, settings: Settings, email: str, network: str) -> None:
        self._limiter = limiter
        self._per_network = settings.rate_limit_login_account_network
        self._per_account = settings.rate_limit_login_account
        self._account = email.lower()
        self._network = network

    async def check(self) -> None:
        """RateLimited (429 with Retry-After) if this network may not try this account's password now."""
        await self._limiter.check(self._per_network, "login-failed-network", self._account, self._network)
        if await self._limiter.spent(
            self._per_account, "login-failed-account", self._account
        ) and await self._limiter.seen(self._per_network, "login-failed-network", self._account, self._network):
            raise RateLimited(
                await self._limiter.retry_after(self._per_network, "login-failed-network", self._account, self._network)
            )

    async def failed(self) -> None:
        """Count a wrong password (or an unknown account: they answer alike) from this network."""
        await self._limiter.record(self._per_network, "login-failed-network", self._account, self._network)
        await self._limiter.record(self._per_account, "login-failed-account", self._account)
