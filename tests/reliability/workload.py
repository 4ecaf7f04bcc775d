"""A steady mix of reads and writes from many asyncio clients, checking every read against acknowledged writes.

Each client owns a few contacts of one user (several clients share a user) and is their only writer. Every write
puts the next version of the contact into its notes (`v=<n>;c=<client>`), so versions of a contact rise in the
order they were sent. The tracker keeps, per contact, when each version was acknowledged, and every read is
checked against it:

* a read that started after version n was acknowledged must show a version >= n (by any client: the global
  check; by the writer itself right after its write: the read-your-writes check);
* a contact whose creation was acknowledged before a read started must be there (GET, its user's list, its
  client's search), and one whose deletion was acknowledged must not be.

Reads see other workers' and other clients' writes, so this catches a cache serving data older than an
acknowledged write (a missing or early invalidation, a late fill) wherever it happens.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import re
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.reliability.conftest import API, Account, register_account
from tests.reliability.secrets_scan import SecretScanner

NOTES = re.compile(r"^v=(\d+);c=(\d+)$")
REQUEST_TIMEOUT = 15.0
LIST_LIMIT = 100


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass
class Call:
    client: int
    kind: str
    start: float
    end: float
    status: int | None
    error: str | None = None
    # The first bytes of the body (the whole body is parsed once and not kept).
    body: bytes = b""

    @property
    def latency(self) -> float:
        return self.end - self.start


@dataclass
class ContactState:
    id: int
    user: int
    owner: int
    created_acked: float
    # (acknowledged at, version), in acknowledgement order (= version order: one writer, one request at a time).
    acks: list[tuple[float, int]] = field(default_factory=list)
    attempted: list[int] = field(default_factory=list)
    last_body: dict[str, Any] | None = None
    delete_sent: float | None = None
    delete_acked: float | None = None

    def required_version(self, started: float) -> int:
        """The newest version acknowledged before `started`."""
        index = bisect.bisect_left(self.acks, (started, -1))
        return self.acks[index - 1][1] if index else 0

    @property
    def last_acked(self) -> int:
        return self.acks[-1][1] if self.acks else 0


@dataclass
class StaleRead:
    kind: str
    contact: int
    detail: str
    own: bool
    # When the read started, and when the write it missed was acknowledged (monotonic clock).
    read_started: float = 0.0
    missed_ack: float = 0.0


@dataclass
class Client:
    index: int
    user: int
    account: Account
    tag: str
    owned: list[int] = field(default_factory=list)
    version: dict[int, int] = field(default_factory=dict)
    created: int = 0


@dataclass
class WorkloadResult:
    calls: list[Call]
    stale: list[StaleRead]
    started: float
    ended: float

    def window(self, start: float, end: float) -> list[Call]:
        return [c for c in self.calls if start <= c.start < end]

    @staticmethod
    def latencies_ms(calls: list[Call]) -> list[float]:
        return [c.latency * 1000 for c in calls]

    def figures(self, calls: list[Call] | None = None) -> dict[str, Any]:
        calls = self.calls if calls is None else calls
        latencies = self.latencies_ms(calls)
        return {"requests": len(calls), "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


class Workload:
    """`clients` concurrent clients over `users` accounts; `write_ratio` of the operations are writes."""

    def __init__(
        self,
        base_url: str,
        *,
        clients: int = 50,
        users: int = 10,
        write_ratio: float = 0.2,
        contacts_per_client: int = 4,
        scanner: SecretScanner | None = None,
        seed: int | None = None,
    ) -> None:
        self.base_url = base_url
        self.client_count = clients
        self.user_count = users
        self.write_ratio = write_ratio
        self.contacts_per_client = contacts_per_client
        self.scanner = scanner
        self.seed = seed if seed is not None else random.randrange(2**32)
        self.clients: list[Client] = []
        self.accounts: list[Account] = []
        self.contacts: dict[int, ContactState] = {}
        self.by_user: dict[int, set[int]] = {}
        self.stale: list[StaleRead] = []
        self.calls: list[Call] = []
        self.http: httpx.AsyncClient | None = None
        # Calls kept for the analysis (the bodies are cut to 500 bytes): bounded, whatever the duration.
        self.max_calls = 2_000_000

    # -- set-up -------------------------------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        # Idle connections are dropped after 2 s, before uvicorn closes them (its keep-alive timeout is 5 s, as is
        # httpx's default): with equal timeouts a request can be sent on a connection the server is closing, and
        # fail with a ReadError that says nothing about the service (seen once in a no-cache baseline).
        limits = httpx.Limits(
            max_connections=self.client_count + 5, max_keepalive_connections=self.client_count + 5, keepalive_expiry=2.0
        )
        hooks = {"response": [self._scan]} if self.scanner else {}
        return httpx.AsyncClient(base_url=self.base_url, timeout=REQUEST_TIMEOUT, limits=limits, event_hooks=hooks)

    async def _scan(self, response: httpx.Response) -> None:
        await response.aread()
        assert self.scanner is not None
        self.scanner.scan_response(response.request.url.path, response.status_code, response.content)

    async def __aenter__(self) -> Workload:
        self.http = self._client()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.aclose()

    async def setup(self) -> None:
        """Register the users and let every client create its first contacts (all must succeed)."""
        assert self.http is not None
        run = secrets.token_hex(3)
        self.accounts = [
            await register_account(self.http, f"load-{run}-{i}@example.com") for i in range(self.user_count)
        ]
        self.clients = [
            Client(i, i % self.user_count, self.accounts[i % self.user_count], f"w{run}c{i}x")
            for i in range(self.client_count)
        ]

        async def seed(client: Client) -> None:
            for _ in range(self.contacts_per_client):
                call = await self._create(client)
                assert call.status == 201, (call.status, call.error, call.body[:300])

        await asyncio.gather(*(seed(c) for c in self.clients))
        self.calls.clear()

    # -- requests ----------------------------------------------------------------------------------------------

    async def _request(self, client: Client, kind: str, method: str, url: str, **kwargs: Any) -> tuple[Call, Any]:
        """The call, and its JSON body when it succeeded."""
        assert self.http is not None
        start = time.monotonic()
        data: Any = None
        try:
            response = await self.http.request(method, url, headers=client.account.headers, **kwargs)
        except (httpx.HTTPError, OSError) as exc:
            call = Call(client.index, kind, start, time.monotonic(), None, f"{type(exc).__name__}: {exc}")
        else:
            call = Call(client.index, kind, start, time.monotonic(), response.status_code, body=response.content[:500])
            if response.status_code in (200, 201) and response.content:
                data = response.json()
        if len(self.calls) < self.max_calls:
            self.calls.append(call)
        return call, data

    def _next_version(self, client: Client, contact_id: int) -> int:
        version = client.version.get(contact_id, 0) + 1
        client.version[contact_id] = version
        self.contacts[contact_id].attempted.append(version)
        return version

    def _ack(self, contact_id: int, call: Call, version: int, data: dict[str, Any]) -> None:
        state = self.contacts[contact_id]
        state.acks.append((call.end, version))
        state.last_body = data

    async def _create(self, client: Client) -> Call:
        client.created += 1
        body = {
            "first_name": f"{client.tag}{client.created}",
            "last_name": "Load",
            "email": f"{client.tag}{client.created}@example.org",
            "notes": f"v=1;c={client.index}",
        }
        call, data = await self._request(client, "create", "POST", f"{API}/contacts", json=body)
        if call.status == 201:
            state = ContactState(data["id"], client.user, client.index, call.end, attempted=[1])
            state.acks.append((call.end, 1))
            state.last_body = data
            self.contacts[state.id] = state
            self.by_user.setdefault(client.user, set()).add(state.id)
            client.owned.append(state.id)
            client.version[state.id] = 1
        return call

    async def _update(self, client: Client, rng: random.Random, *, full: bool) -> Call:
        contact_id = rng.choice(client.owned)
        version = self._next_version(client, contact_id)
        notes = f"v={version};c={client.index}"
        if full:
            n = f"{contact_id}v{version}"
            body: dict[str, Any] = {
                "first_name": f"{client.tag}{n}",
                "last_name": "Replaced",
                "email": f"{client.tag}{n}@example.org",
                "phone": "+1 555 0100",
                "notes": notes,
            }
            call, data = await self._request(client, "put", "PUT", f"{API}/contacts/{contact_id}", json=body)
        else:
            call, data = await self._request(
                client, "patch", "PATCH", f"{API}/contacts/{contact_id}", json={"notes": notes}
            )
        if call.status == 200:
            self._ack(contact_id, call, version, data)
            self._check_item(call, data, client, call.start, write=True)
        return call

    async def _delete(self, client: Client, rng: random.Random) -> Call:
        contact_id = rng.choice(client.owned)
        state = self.contacts[contact_id]
        client.owned.remove(contact_id)
        state.delete_sent = time.monotonic()
        call, _ = await self._request(client, "delete", "DELETE", f"{API}/contacts/{contact_id}")
        if call.status == 204:
            state.delete_acked = call.end
        return call

    # -- reads and their checks --------------------------------------------------------------------------------

    def _stale(self, call: Call, contact_id: int, detail: str, client: Client, missed_ack: float) -> None:
        own = self.contacts[contact_id].owner == client.index
        self.stale.append(StaleRead(call.kind, contact_id, detail, own, call.start, missed_ack))

    def _check_item(
        self, call: Call, item: dict[str, Any], client: Client, started: float, write: bool = False
    ) -> None:
        state = self.contacts.get(item.get("id", -1))
        if state is None:
            return
        match = NOTES.match(item.get("notes") or "")
        if match is None:
            self._stale(call, state.id, f"notes not a version: {item.get('notes')!r}", client, 0.0)
            return
        seen = int(match.group(1))
        required = state.required_version(started)
        if seen < required:
            acked = next(t for t, v in state.acks if v == required)
            self._stale(call, state.id, f"saw v{seen} after v{required} was acknowledged", client, acked)
        if not write and state.delete_acked is not None and state.delete_acked < started:
            self._stale(call, state.id, "served after its deletion was acknowledged", client, state.delete_acked)

    def _check_absent(self, call: Call, contact_id: int, client: Client) -> None:
        state = self.contacts[contact_id]
        if state.created_acked < call.start and (state.delete_sent is None or state.delete_sent > call.end):
            self._stale(call, contact_id, "missing after its creation was acknowledged", client, state.created_acked)

    async def _get(self, client: Client, rng: random.Random, *, sibling: bool) -> Call:
        if sibling:
            candidates = list(self.by_user.get(client.user, ()))
            contact_id = rng.choice(candidates)
        else:
            contact_id = rng.choice(client.owned)
        kind = "get_other" if sibling else "get"
        call, data = await self._request(client, kind, "GET", f"{API}/contacts/{contact_id}")
        if call.status == 200:
            self._check_item(call, data, client, call.start)
        elif call.status == 404:
            self._check_absent(call, contact_id, client)
        return call

    async def _list(self, client: Client) -> Call:
        call, page = await self._request(client, "list", "GET", f"{API}/contacts", params={"limit": LIST_LIMIT})
        if call.status == 200:
            seen = {item["id"]: item for item in page["items"]}
            for item in page["items"]:
                self._check_item(call, item, client, call.start)
            if page["total"] <= LIST_LIMIT:
                for contact_id in self.by_user.get(client.user, ()):
                    if contact_id not in seen:
                        self._check_absent(call, contact_id, client)
        return call

    async def _search(self, client: Client) -> Call:
        params = {"q": client.tag, "limit": 50}
        call, page = await self._request(client, "search", "GET", f"{API}/contacts", params=params)
        if call.status == 200:
            seen = {item["id"] for item in page["items"]}
            for item in page["items"]:
                self._check_item(call, item, client, call.start)
            # PUT renames a contact but keeps the client's tag in its name, so every owned contact matches.
            for contact_id in [c for c in self.by_user.get(client.user, ()) if self.contacts[c].owner == client.index]:
                if contact_id not in seen:
                    self._check_absent(call, contact_id, client)
        return call

    # -- the loop --------------------------------------------------------------------------------------------------

    async def _operation(self, client: Client, rng: random.Random) -> Call:
        if rng.random() < self.write_ratio:
            roll = rng.random()
            if roll < 0.1 and len(client.owned) < 2 * self.contacts_per_client:
                return await self._create(client)
            if roll < 0.2 and len(client.owned) > 2:
                return await self._delete(client, rng)
            return await self._update(client, rng, full=roll > 0.85)
        roll = rng.random()
        if roll < 0.4:
            return await self._get(client, rng, sibling=False)
        if roll < 0.6:
            return await self._get(client, rng, sibling=True)
        if roll < 0.9:
            return await self._list(client)
        return await self._search(client)

    async def run(
        self, duration: float | None = None, *, until: Awaitable[Any] | None = None, max_calls: int = 1_000_000
    ) -> WorkloadResult:
        """Run every client until `duration` seconds have passed or `until` is done (bounded by `max_calls`)."""
        assert self.http is not None
        assert self.clients
        stop = asyncio.Event()
        started = time.monotonic()
        first_call = len(self.calls)
        first_stale = len(self.stale)

        async def client_loop(client: Client) -> None:
            rng = random.Random(self.seed * 1000 + client.index + first_call)
            while not stop.is_set() and len(self.calls) - first_call < max_calls:
                await self._operation(client, rng)

        tasks = [asyncio.create_task(client_loop(c)) for c in self.clients]
        try:
            if until is not None:
                await until
            else:
                assert duration is not None
                await asyncio.sleep(duration)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        return WorkloadResult(self.calls[first_call:], self.stale[first_stale:], started, time.monotonic())


async def cache_counters(http: httpx.AsyncClient) -> dict[str, float]:
    """The server's cache counters that explain a run: hits, errors and bypasses, deferred invalidations."""
    return {
        "hits": await metric_total(http, "contacts_api_cache_requests_total", result="hit"),
        "errors": await metric_total(http, "contacts_api_cache_requests_total", result="error"),
        "bypasses": await metric_total(http, "contacts_api_cache_requests_total", result="bypass"),
        "deferred invalidations": await metric_total(http, "contacts_api_cache_invalidations_total", result="deferred"),
    }


def counters_delta(before: dict[str, float], after: dict[str, float]) -> str:
    return ", ".join(f"{name} {after[name] - before[name]:.0f}" for name in before)


async def metric_total(http: httpx.AsyncClient, name: str, **labels: str) -> float:
    """The sum of a Prometheus counter's samples matching `labels`, from the server's /metrics."""
    text = (await http.get("/metrics", timeout=5)).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text, _, value = line[len(name) + 1 :].rpartition("} ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total
