"""Fixtures for the tests that need the servers: the app's cache rebound to other settings for one test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.core.cache import cache
from app.core.config import Settings
from tests.conftest import make_settings


@pytest.fixture
async def reconfigure(clean: None, settings: Settings) -> AsyncIterator[Callable[..., Settings]]:
    """Rebinds the app's cache to settings overrides for one test; restores the test settings afterwards."""

    def rebind(backend: Any = None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {"database_url": settings.database_url, "redis_url": settings.redis_url}
        values.update(overrides)
        changed = make_settings(**values)
        cache.configure(changed, backend=backend)
        return changed

    yield rebind
    await cache.close()
    cache.configure(settings)
