"""`GET /metrics`: Prometheus text, with the cache hit ratio per kind derived from the request counters, served
only to the networks in METRICS_ALLOW or to a scraper holding METRICS_TOKEN."""

from __future__ import annotations

import hmac
import ipaddress
import os

from fastapi import Request
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from app.core.cache import hit_ratios
from app.core.config import Settings
from app.core.errors import Forbidden
from app.core.rate_limit import client_ip

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsForbidden(Forbidden):
    """Metrics are served only to allowed networks or with the metrics token."""

    code = "MetricsForbidden"


def check_metrics_access(request: Request, settings: Settings) -> None:
    """Let the request through if its client (the address after trusted proxies) is in METRICS_ALLOW, or if it
    bears METRICS_TOKEN; else MetricsForbidden. Metrics tell an outsider how busy the service is, how its cache
    behaves and how many accounts act: not public."""
    if settings.metrics_token is not None:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        expected = settings.metrics_token.get_secret_value().encode()
        if scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), expected):
            return
    try:
        address = ipaddress.ip_address(client_ip(request, settings.trusted_proxies))
    except ValueError as exc:
        raise MetricsForbidden from exc
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not any(address in ipaddress.ip_network(entry, strict=False) for entry in settings.metrics_allow):
        raise MetricsForbidden


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
