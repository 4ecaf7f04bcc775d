from __future__ import annotations

import time

from app.core.breaker import CircuitBreaker


def test_breaker_opens_after_threshold_consecutive_failures():
    breaker = CircuitBreaker(threshold=3, cooldown=10)
    for _ in range(2):
        breaker.record_failure()
    assert not breaker.is_open
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.is_open
    assert not breaker.allow()


def test_a_success_resets_the_failure_count():
    breaker = CircuitBreaker(threshold=2, cooldown=10)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert not breaker.is_open


def test_after_cooldown_exactly_one_probe_is_let_through():
    breaker = CircuitBreaker(threshold=1, cooldown=0.01)
    breaker.record_failure()
    time.sleep(0.02)
    assert breaker.allow()
    assert not breaker.allow()  # the probe is in flight: everyone else still skips


def test_a_failed_probe_reopens_and_a_successful_one_closes():
    breaker = CircuitBreaker(threshold=1, cooldown=0.01)
    breaker.record_failure()
    time.sleep(0.02)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.is_open
    assert not breaker.allow()
    time.sleep(0.02)
    assert breaker.allow()
    assert breaker.record_success() is True
    assert not breaker.is_open
    assert breaker.allow()


def test_an_abandoned_probe_lets_the_next_call_probe():
    breaker = CircuitBreaker(threshold=1, cooldown=0.01)
    breaker.record_failure()
    time.sleep(0.02)
    assert breaker.allow()
    breaker.abandon_probe()
    assert breaker.allow()
