"""Redis faults under load against the real server: killed and restarted, paused (CLIENT PAUSE), frozen in short
bursts (SIGSTOP/SIGCONT). The service must not fail a request, must stay within a latency bound of the same service
without a cache (measured in the same run), must serve cache hits again within 10 s of Redis' return, and must never
serve a read older than an acknowledged write.

Latency bound: the p99 of the requests started during the fault is at most 3 x the no-cache p99 + 250 ms. A request
may pay the cache's operation timeout (CACHE_OP_TIMEOUT = 50 ms, 100 ms with the outer guard) a few times before the
circuit breaker opens (after 3 failures; a probe per second while open), so a fault may add a few hundred ms to
the slowest requests, never seconds (redis-py's default retries, a blocked connection pool, a hung socket would).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.reliability.conftest import ApiServer, Deployment
from tests.reliability.secrets_scan import SecretScanner
from tests.reliability.workload import (
    Call,
    Workload,
    WorkloadResult,
    cache_counters,
    counters_delta,
    metric_total,
    percentile,
)

pytestmark = pytest.mark.postgres_only

CLIENTS = 30
USERS = 6
HIT_RECOVERY_LIMIT = 10.0
P99_FACTOR = 3.0
P99_ALLOWANCE_MS = 250.0
HITS = "contacts_api_cache_requests_total"


def _slow_selected(config: pytest.Config) -> bool:
    return "slow" in (config.getoption("-m") or "") and "not slow" not in (config.getoption("-m") or "")


@pytest.fixture(scope="module")
def nocache(deployment: Deployment) -> Iterator[ApiServer]:
    """The same service, same database, cache switched off: the baseline (stopped after this module)."""
    server = ApiServer("nocache", deployment.database_url, None, migrate=False, extra_env={"CACHE_ENABLED": "false"})
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass
class Baseline:
    p50_ms: float
    p99_ms: float
    requests: int


@pytest.fixture(scope="module")
async def baseline(
    nocache: ApiServer, secret_scanner: SecretScanner, request: pytest.FixtureRequest, reliability_report: Any
) -> Baseline:
    seconds = 15.0 if _slow_selected(request.config) else 5.0
    async with Workload(nocache.base_url, clients=CLIENTS, users=USERS, scanner=secret_scanner) as workload:
        await workload.setup()
        result = await workload.run(seconds)
    failed = _failed(result.calls)
    figures = result.figures()
    reliability_report.record(
        "redis faults: no-cache baseline",
        outcome="PASS" if not failed and not result.stale else "FAIL",
        errors=len(failed),
        stale_reads=len(result.stale),
        notes=f"{seconds:.0f} s, {CLIENTS} clients, CACHE_ENABLED=false, same database",
        **figures,
    )
    assert failed == [], failed[:5]
    assert result.stale == [], result.stale[:5]
    return Baseline(figures["p50_ms"], figures["p99_ms"], figures["requests"])


def _failed(calls: list[Call]) -> list[Call]:
    return [
        c for c in calls if c.status is None or (c.status >= 400 and not (c.status == 404 and c.kind == "get_other"))
    ]


@pytest.fixture
async def metrics_http(deployment: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=deployment.base_url, timeout=10) as http:
        yield http


Fault = Callable[[Deployment, float], Awaitable[None]]


async def kill_and_restart(deployment: Deployment, seconds: float) -> None:
    deployment.redis.kill()
    await asyncio.sleep(seconds)
    await asyncio.to_thread(deployment.redis.start)


async def client_pause(deployment: Deployment, seconds: float) -> None:
    admin = Redis.from_url(deployment.redis.url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")  # type: ignore[no-untyped-call]
    finally:
        await admin.aclose()
    await asyncio.sleep(seconds)


async def freeze_in_bursts(deployment: Deployment, seconds: float) -> None:
    """SIGSTOP for 300 ms, SIGCONT for 200 ms, over and over: a Redis that answers late, then not at all."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        deployment.redis.stop_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(0.3)
        finally:
            deployment.redis.stop_signal(signal.SIGCONT)
        await asyncio.sleep(0.2)


async def _run_fault(
    name: str,
    fault: Fault,
    seconds: float,
    deployment: Deployment,
    metrics_http: httpx.AsyncClient,
    baseline: Baseline,
    scanner: SecretScanner,
    figures: Any,
) -> None:
    marks: dict[str, float] = {}

    async def scenario(workload: Workload) -> None:
        await asyncio.sleep(3)  # warm: the cache fills
        marks["fault"] = time.monotonic()
        await fault(deployment, seconds)
        marks["back"] = time.monotonic()
        hits = await metric_total(metrics_http, HITS, result="hit")
        while time.monotonic() - marks["back"] < HIT_RECOVERY_LIMIT + 5:
            await asyncio.sleep(0.1)
            if await metric_total(metrics_http, HITS, result="hit") > hits:
                marks["hits"] = time.monotonic()
                break
        await asyncio.sleep(2)  # steady again after recovery

    try:
        async with Workload(deployment.base_url, clients=CLIENTS, users=USERS, scanner=scanner) as workload:
            await workload.setup()
            before = await cache_counters(metrics_http)
            result: WorkloadResult = await workload.run(until=scenario(workload))
            counters = counters_delta(before, await cache_counters(metrics_http))
    finally:
        # Whatever happened, the next test gets a running Redis.
        deployment.redis.stop_signal(signal.SIGCONT)
        if deployment.redis.process is None:
            await asyncio.to_thread(deployment.redis.start)

    failed = _failed(result.calls)
    during = result.window(marks["fault"], marks["back"])
    p99_fault = percentile(WorkloadResult.latencies_ms(during), 99) or 0.0
    bound = P99_FACTOR * baseline.p99_ms + P99_ALLOWANCE_MS
    hit_delay = marks["hits"] - marks["back"] if "hits" in marks else None
    figures(
        errors=len(failed),
        stale_reads=len(result.stale),
        notes=f"{name} {seconds:g} s; p99 during fault {p99_fault:.0f} ms over {len(during)} requests "
        f"(bound {bound:.0f} ms = {P99_FACTOR:g} x no-cache p99 {baseline.p99_ms:.0f} + {P99_ALLOWANCE_MS:.0f}); "
        f"hits back {f'{hit_delay:.1f} s' if hit_delay is not None else 'never'} after recovery; cache: {counters}",
        **result.figures(),
    )
    assert failed == [], [(c.kind, c.status, c.error, c.body[:200]) for c in failed[:10]]
    t0 = marks["fault"]
    assert result.stale == [], [
        f"{s.kind} of contact {s.contact}: {s.detail} (times from the fault's start: write acknowledged "
        f"{s.missed_ack - t0:+.2f} s, read {s.read_started - t0:+.2f} s, Redis back {marks['back'] - t0:+.2f} s)"
        for s in result.stale[:10]
    ]
    assert len(during) > 0
    assert p99_fault <= bound
    assert hit_delay is not None
    assert hit_delay <= HIT_RECOVERY_LIMIT


async def test_redis_killed_then_restarted_under_load(
    deployment: Deployment,
    metrics_http: httpx.AsyncClient,
    baseline: Baseline,
    secret_scanner: SecretScanner,
    figures: Any,
) -> None:
    await _run_fault("killed", kill_and_restart, 3, deployment, metrics_http, baseline, secret_scanner, figures)


async def test_redis_paused_under_load(
    deployment: Deployment,
    metrics_http: httpx.AsyncClient,
    baseline: Baseline,
    secret_scanner: SecretScanner,
    figures: Any,
) -> None:
    await _run_fault("CLIENT PAUSE", client_pause, 3, deployment, metrics_http, baseline, secret_scanner, figures)


async def test_redis_frozen_in_bursts_under_load(
    deployment: Deployment,
    metrics_http: httpx.AsyncClient,
    baseline: Baseline,
    secret_scanner: SecretScanner,
    figures: Any,
) -> None:
    await _run_fault("SIGSTOP bursts", freeze_in_bursts, 3, deployment, metrics_http, baseline, secret_scanner, figures)


@pytest.mark.slow
async def test_redis_killed_for_30_seconds_under_load(
    deployment: Deployment,
    metrics_http: httpx.AsyncClient,
    baseline: Baseline,
    secret_scanner: SecretScanner,
    figures: Any,
) -> None:
    await _run_fault("killed", kill_and_restart, 30, deployment, metrics_http, baseline, secret_scanner, figures)


@pytest.mark.slow
async def test_redis_paused_for_10_seconds_under_load(
    deployment: Deployment,
    metrics_http: httpx.AsyncClient,
    baseline: Baseline,
    secret_scanner: SecretScanner,
    figures: Any,
) -> None:
    await _run_fault("CLIENT PAUSE", client_pause, 10, deployment, metrics_http, baseline, secret_scanner, figures)


@pytest.mark.slow
async def test_redis_frozen_in_bursts_for_20_seconds_under_load(
    deployment: Deployment,
    metrics_http: httpx.AsyncClient,
    baseline: Baseline,
    secret_scanner: SecretScanner,
    figures: Any,
) -> None:
    await _run_fault(
        "SIGSTOP bursts", freeze_in_bursts, 20, deployment, metrics_http, baseline, secret_scanner, figures
    )
