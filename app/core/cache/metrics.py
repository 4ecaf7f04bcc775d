"""The cache's Prometheus counters (look-ups by kind and result, round trips, fills, invalidations), hit ratios."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from prometheus_client import Counter


class Kind(enum.StrEnum):
    """What a look-up was for: the `kind` label of the look-up counter."""

    user = "user"
    contact = "contact"
    contacts_list = "contacts_list"


CACHE_REQUESTS = Counter(
    "contacts_api_cache_requests", "Cache look-ups by kind and result (hit, miss, error, bypass)", ["kind", "result"]
)
REDIS_ROUNDTRIPS = Counter("contacts_api_redis_roundtrips", "Round trips to the cache backend")
CACHE_INVALIDATIONS = Counter("contacts_api_cache_invalidations", "Cache invalidations by outcome", ["result"])
CACHE_FILLS = Counter("contacts_api_cache_fills", "Cache fills by outcome (stored, refused, error)", ["result"])


def count_lookup(kind: Kind, result: str) -> None:
    CACHE_REQUESTS.labels(kind, result).inc()


def hit_ratios(samples: Iterable[tuple[str, str, float]]) -> dict[str, float]:
    """Hit ratio per kind from (kind, result, count) samples."""
    totals: dict[str, list[float]] = {}
    for kind, result, value in samples:
        hits_total = totals.setdefault(kind, [0.0, 0.0])
        if result == "hit":
            hits_total[0] += value
        if result in ("hit", "miss"):
            hits_total[1] += value
    return {kind: (hits / total if total else 0.0) for kind, (hits, total) in totals.items()}
