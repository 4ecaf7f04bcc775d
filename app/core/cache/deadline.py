"""A timeout for one cache operation that counts the event loop's attention to it, not the loop's own lag, and
fails it only while Redis gives no sign of life."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# A timer that fires this much after its time shows that the event loop was busy elsewhere.
LOOP_LAG_SLACK = 0.005
# Loop iterations an operation still gets once its time is up, before it is failed: a reply that arrived while
# the loop was busy needs two or three (socket readable, then the waiting task's step). Free on an idle loop.
GRACE_ITERATIONS = 8


class Deadline:
    """Expires an `asyncio.timeout` window once an operation has had `timeout` seconds of the event loop's
    attention while Redis answered nothing. A plain timeout counts the loop's own work: when a worker is saturated
    (a herd of requests parsing and verifying tokens, a cold worker opening its connections), Redis answers in
    time but the reply waits in the socket or behind the other replies, and a 50 ms timeout would fail healthy
    operations, open the breaker and send everyone to the database just when the cache matters most.

    So when the time is up: a timer that fires late (the loop was busy) gives the operation a fresh `timeout`;
    so does a reply that Redis sent on any of the backend's connections since the operation began or was last
    given time (`answers`, a count of them: Redis is alive and working through a queue); otherwise the loop
    still runs a few more iterations, in which a reply already received completes the operation. All within
    `cap`. A Redis that hangs (stopped, unreachable without a reset) answers nothing: its operations still fail
    after `timeout`, as on an idle loop."""

    __slots__ = ("_answers", "_cap_at", "_handle", "_hops", "_loop", "_seen", "_timeout", "_window")

    def __init__(
        self, window: asyncio.Timeout, timeout: float, cap: float, answers: Callable[[], int] | None = None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._window = window
        self._timeout = timeout
        self._hops = 0
        self._answers = answers
        self._seen = answers() if answers is not None else 0
        now = self._loop.time()
        self._cap_at = now + max(timeout, cap)
        self._handle: asyncio.Handle = self._loop.call_at(now + timeout, self._fire, now + timeout)

    def _fire(self, due: float) -> None:
        now = self._loop.time()
        if now >= self._cap_at:
            self._window.reschedule(now)
        elif now - due > LOOP_LAG_SLACK or self._answered():
            when = min(now + self._timeout, self._cap_at)
            self._hops = 0
            self._handle = self._loop.call_at(when, self._fire, when)
        elif self._hops < GRACE_ITERATIONS:
            self._hops += 1
            self._handle = self._loop.call_soon(self._fire, now)
        else:
            self._window.reschedule(now)

    def _answered(self) -> bool:
        """Whether Redis replied to anyone since the last look (and take note of it)."""
        if self._answers is None:
            return False
        seen = self._answers()
        answered, self._seen = seen != self._seen, seen
        return answered

    def cancel(self) -> None:
        self._handle.cancel()
