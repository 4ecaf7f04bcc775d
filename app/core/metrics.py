"""`GET /metrics`: Prometheus text, with the cache hit ratio per kind derived from the request counters."""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from app.core.cache import hit_ratios

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _registry() -> CollectorRegistry:
    # Under several workers each process writes its own files; one scrape aggregates them all.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def render_metrics() -> bytes:
    registry = _registry()
    samples = [
        (sample.labels["kind"], sample.labels["result"], sample.value)
        for metric in registry.collect()
        if metric.name == "contacts_api_cache_requests"
        for sample in metric.samples
        if sample.name.endswith("_total")
    ]
    lines = [
        "# HELP contacts_api_cache_hit_ratio Cache hits / (hits + misses) per kind since start",
        "# TYPE contacts_api_cache_hit_ratio gauge",
    ]
    lines += [
        f'contacts_api_cache_hit_ratio{{kind="{kind}"}} {ratio:.6f}'
        for kind, ratio in sorted(hit_ratios(samples).items())
    ]
    return generate_latest(registry) + ("\n".join(lines) + "\n").encode()
