"""The Redis topologies chosen by settings: one server, a Redis Cluster (REDIS_CLUSTER_NODES or a redis+cluster://
URL), a Sentinel-watched master (REDIS_SENTINELS, REDIS_SENTINEL_MASTER); one user's keys in one hash slot on the
cluster; the rate limiter on the same topology; a client library failure that is an outage, not a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError
from redis.asyncio.cluster import ClusterNode, RedisCluster
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import RedisBackend, cache
from app.core.cache.topology import parse
from app.core.config import Settings
from app.core.errors import RateLimited
from app.core.rate_limit import RateLimiter
from tests.conftest import MakeCache, make_settings
from tests.factories import auth_headers, make_contact, make_user
from tests.topologies import ClusterServers, SentinelGroup, cluster_settings, sentinel_settings

API = "/api/v1"


# -- settings ---------------------------------------------------------------------------------------------------


def test_cluster_nodes_and_sentinels_become_urls_of_their_topology() -> None:
    cluster = make_settings(redis_cluster_nodes="10.0.0.1:7000, 10.0.0.2:7001", redis_password="p@ss/word")
    sentinel = make_settings(redis_sentinels="s1:26379,s2:26379", redis_sentinel_master="cache", redis_db=2)

    assert cluster.redis_dsn == "redis+cluster://:p%40ss%2Fword@10.0.0.1:7000,10.0.0.2:7001"
    assert sentinel.redis_dsn == "redis+sentinel://s1:26379,s2:26379/cache/2"
    parsed = parse(cluster.redis_dsn)
    assert (parsed.kind, parsed.nodes, parsed.password, parsed.hash_tags) == (
        "cluster",
        (("10.0.0.1", 7000), ("10.0.0.2", 7001)),
        "p@ss/word",
        True,
    )
    assert parse(sentinel.redis_dsn) == parse("redis+sentinel://s1:26379,s2:26379/cache/2")
    assert (parse(sentinel.redis_dsn).service, parse(sentinel.redis_dsn).db) == ("cache", 2)
    assert parse("redis://h:6379/0").kind == "single"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"redis_cluster_nodes": "no-port"}, "not host:port"),
        ({"redis_sentinels": "host:99999"}, "not host:port"),
        ({"redis_url": "redis://h:6379/0", "redis_cluster_nodes": "h:7000"}, "exclude each other"),
        ({"redis_cluster_nodes": "h:7000", "redis_sentinels": "h:26379"}, "exclude each other"),
        ({"cache_write_policy": "sometimes"}, "cache_write_policy"),
    ],
)
def test_malformed_or_conflicting_topologies_are_refused_at_start(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None, **overrides)


def test_a_url_of_an_unknown_scheme_or_without_a_master_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        parse("memcached://h:11211")
    with pytest.raises(ValueError, match="names the master"):
        parse("redis+sentinel://h:26379")


# -- keys on a cluster ------------------------------------------------------------------------------------------


async def test_every_key_of_one_user_lies_in_one_cluster_slot(
    redis_cluster: ClusterServers, settings: Settings, make_cache: MakeCache
) -> None:
    instance = make_cache(make_settings(database_url=settings.database_url, **cluster_settings(redis_cluster)))
    backend = instance.backend
    assert isinstance(backend, RedisBackend)
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in redis_cluster.nodes])
    try:
        for user_id in (1, 42, 987654321):
            keys = [instance.user_key(user_id), instance.contacts_key(user_id)]
            keys += [instance.contact_key(contact_id, user_id) for contact_id in (1, 7, 10**9)]
            assert len({client.keyslot(key) for key in keys}) == 1, keys
        # Users are spread over the slots (the tag is the id, not a constant).
        assert len({client.keyslot(instance.user_key(user_id)) for user_id in range(50)}) > 40
    finally:
        await client.aclose()


# -- the rate limiter on the same topology ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cluster", "sentinel"])
async def test_rate_limits_are_counted_on_the_topology_and_shared_by_workers(
    request: pytest.FixtureRequest, name: str
) -> None:
    if name == "cluster":
        servers: ClusterServers = request.getfixturevalue("redis_cluster")
        servers.flush()
        overrides = cluster_settings(servers)
    else:
        group: SentinelGroup = request.getfixturevalue("redis_sentinel")
        group.flush()
        overrides = sentinel_settings(group)
    workers = [RateLimiter(make_settings(**overrides)) for _ in range(2)]  # two processes' limiters

    outcomes: list[RateLimited | None] = []
    for attempt in range(8):
        try:
            await workers[attempt % 2].hit("5/minute", "client-1")
            outcomes.append(None)
        except RateLimited as refused:
            outcomes.append(refused)

    assert [outcome is None for outcome in outcomes] == [True] * 5 + [False] * 3
    assert all(int(o.headers["Retry-After"]) >= 1 for o in outcomes if o is not None and o.headers)
    assert not any(limiter._breaker.is_open for limiter in workers)  # counted in Redis, not in process
    assert await workers[0].spent("5/minute", "client-1")
    assert not await workers[1].spent("5/minute", "client-2")


# -- a failure of the client library is an outage, not an error ------------------------------------------------


async def test_a_redis_client_that_raises_something_unexpected_leaves_reads_and_writes_working(
    client: Any,
    db: AsyncSession,
    settings: Settings,
    reconfigure: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvloop raises RuntimeError("... handler is closed") when redis-py writes to a connection that another task
    closed while a cluster node failed: the request must still be answered from the database."""
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Grace")
    headers = auth_headers(settings, user)
    reconfigure()
    backend = cache.backend

    async def closed_transport(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed")

    for operation in ("get", "get_or_lease", "fill", "tombstone", "delete"):
        monkeypatch.setattr(backend, operation, closed_transport)

    read = await client.get(f"{API}/contacts/{contact.id}", headers=headers)
    write = await client.patch(f"{API}/contacts/{contact.id}", json={"first_name": "Ada"}, headers=headers)
    again = await client.get(f"{API}/contacts/{contact.id}", headers=headers)

    assert (read.status_code, read.json()["first_name"]) == (200, "Grace")
    assert (write.status_code, write.json()["first_name"]) == (200, "Ada")
    assert (again.status_code, again.json()["first_name"]) == (200, "Ada")
