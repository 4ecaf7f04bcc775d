"""A circuit breaker: stop calling a dependency that keeps failing, and probe for its return (cache, rate limits)."""

from __future__ import annotations

import time


class CircuitBreaker:
    """Closed: calls go through. After `threshold` consecutive failures it opens and calls are skipped for
    `cooldown` seconds; then one probe is let through (half-open) and its outcome closes or reopens it."""

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if self._probing or time.monotonic() - self.opened_at < self.cooldown:
            return False
        self._probing = True
        return True

    def record_success(self) -> bool:
        """Returns True when this success closed an open breaker."""
        was_open = self.opened_at is not None
        self.failures = 0
        self.opened_at = None
        self._probing = False
        return was_open

    def abandon_probe(self) -> None:
        """The probe ended without an answer either way (cancelled): let the next call probe."""
        self._probing = False

    def record_failure(self) -> None:
        self.failures += 1
        if self._probing or self.failures >= self.threshold:
            self.opened_at = time.monotonic()
        self._probing = False
