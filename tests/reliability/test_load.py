"""A sustained mixed workload (80% reads, 20% writes, 50 clients) on PostgreSQL + Redis, 2 workers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.reliability.conftest import Deployment
from tests.reliability.secrets_scan import SecretScanner
from tests.reliability.workload import Workload, cache_counters, counters_delta

pytestmark = pytest.mark.postgres_only


async def _sustained_load(deployment: Deployment, scanner: SecretScanner, figures: Any, seconds: float) -> None:
    async with Workload(deployment.base_url, clients=50, users=10, write_ratio=0.2, scanner=scanner) as workload:
        await workload.setup()
        assert workload.http is not None
        before = await cache_counters(workload.http)
        result = await workload.run(seconds)
        counters = counters_delta(before, await cache_counters(workload.http))
    failed = [c for c in result.calls if c.status is None or (c.status >= 400 and not _benign_404(c))]
    reads = sum(1 for c in result.calls if c.kind in ("get", "get_other", "list", "search"))
    figures(
        errors=len(failed),
        stale_reads=len(result.stale),
        notes=f"{seconds:.0f} s, 50 clients, {reads / max(1, len(result.calls)):.0%} reads, "
        f"{len(result.calls) / (result.ended - result.started):.0f} req/s; cache: {counters}",
        **result.figures(),
    )
    assert len(result.calls) > 0
    assert failed == [], failed[:5]
    assert result.stale == [], result.stale[:5]


def _benign_404(call: Any) -> bool:
    # A read of a sibling client's contact that its owner deleted meanwhile (the tracker checked it).
    return bool(call.status == 404 and call.kind == "get_other")


async def test_sustained_mixed_load_has_no_errors_and_no_stale_reads(
    deployment: Deployment, secret_scanner: SecretScanner, figures: Any
) -> None:
    await _sustained_load(deployment, secret_scanner, figures, 10)


@pytest.mark.slow
async def test_sustained_mixed_load_for_a_minute(
    deployment: Deployment, secret_scanner: SecretScanner, figures: Any
) -> None:
    await _sustained_load(deployment, secret_scanner, figures, 60)
