"""Load generation: wrk (with a generated Lua script) where it is installed, else a small asyncio generator over raw
sockets. Both draw requests at random from the same pools of pre-built raw HTTP/1.1 requests, so a workload means
the same thing whichever generator runs it.

Also here: a one-pass replay (cache warm-up), a simultaneous burst over N open connections (the herd), and a
blocking single request for checks and /metrics scrapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"


def raw_request(method: str, path: str, token: str | None = None, body: bytes | None = None) -> bytes:
    """One keep-alive HTTP/1.1 request, byte for byte."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


@dataclass(frozen=True)
class Workload:
    """Weighted pools of raw requests; each request picks a pool by weight, then a request in it uniformly."""

    name: str
    pools: tuple[tuple[float, tuple[bytes, ...]], ...]

    @classmethod
    def single(cls, name: str, requests: list[bytes]) -> Workload:
        return cls(name, ((1.0, tuple(requests)),))

    def pick(self, rng: random.Random) -> bytes:
        r = rng.random()
        for weight, requests in self.pools:
            if r < weight:
                return requests[rng.randrange(len(requests))]
            r -= weight
        requests = self.pools[-1][1]
        return requests[rng.randrange(len(requests))]


@dataclass
class LoadResult:
    requests: int
    duration: float
    errors: int
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration if self.duration else 0.0


# ---------------------------------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------------------------------


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    binary = wrk_binary()
    if not binary:
        return "absent"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "wrk"
    return " ".join(first.split()[:2])


def _lua_string(data: bytes) -> str:
    out = ['"']
    for byte in data:
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\{byte}")
    out.append('"')
    return "".join(out)


_LUA_FOOTER = """
local cumulative = {}
local acc = 0
for i, pool in ipairs(pools) do acc = acc + pool.w; cumulative[i] = acc end
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
function init(args)
  math.randomseed(os.time() * 7919 + (seed or 0) * 104729)
end
function request()
  local r = math.random() * acc
  for i, pool in ipairs(pools) do
    if r <= cumulative[i] then return pool.reqs[math.random(#pool.reqs)] end
  end
  local last = pools[#pools].reqs
  return last[math.random(#last)]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nBENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50":%d,"p99":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def write_lua(workload: Workload, directory: Path) -> Path:
    parts = ["pools = {"]
    for weight, requests in workload.pools:
        parts.append(f"{{w={weight!r}, reqs={{")
        parts.extend(_lua_string(req) + "," for req in requests)
        parts.append("}},")
    parts.append("}")
    path = directory / f"{workload.name}.lua"
    path.write_text("\n".join(parts) + _LUA_FOOTER)
    return path


def run_wrk(port: int, script: Path, duration: float, connections: int, threads: int) -> LoadResult:
    binary = wrk_binary()
    assert binary
    seconds = max(1, round(duration))
    cmd = [binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script)]
    cmd.append(f"http://{HOST}:{port}/")
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=seconds + 30)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    kinds = {kind: data[kind] for kind in ("connect", "read", "write", "status", "timeout") if data[kind]}
    return LoadResult(
        requests=data["requests"],
        duration=data["duration_us"] / 1e6,
        errors=sum(kinds.values()),
        p50_ms=data["p50"] / 1000,
        p99_ms=data["p99"] / 1000,
        error_kinds={("non-2xx/3xx" if kind == "status" else kind): n for kind, n in kinds.items()},
    )


# ---------------------------------------------------------------------------------------------------------------
# The asyncio fallback: raw sockets, keep-alive, one request in flight per connection (as wrk does)
# ---------------------------------------------------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    index = lower.find(b"\r\ncontent-length:")
    if index >= 0:
        end = lower.index(b"\r\n", index + 2)
        length = int(lower[index + 17 : end])
        if length:
            await reader.readexactly(length)
    elif b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _connection_loop(
    port: int, workload: Workload, deadline: float, latencies: list[float], statuses: Counter[int], seed: int
) -> int:
    rng = random.Random(seed)
    errors = 0
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.perf_counter() < deadline:
            request = workload.pick(rng)
            start = time.perf_counter()
            try:
                writer.write(request)
                status = await asyncio.wait_for(_read_response(reader), 5)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
                continue
            latencies.append(time.perf_counter() - start)
            statuses[status] += 1
    finally:
        writer.close()
    return errors


def _python_worker(port: int, workload: Workload, duration: float, connections: int, seed: int, queue: object) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> tuple[list[float], Counter[int], int, float]:
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        start = time.perf_counter()
        deadline = start + duration
        results = await asyncio.gather(
            *(
                _connection_loop(port, workload, deadline, latencies, statuses, seed * 1000 + i)
                for i in range(connections)
            ),
            return_exceptions=True,
        )
        errors = sum(r if isinstance(r, int) else 1 for r in results)
        return latencies, statuses, errors, time.perf_counter() - start

    queue.put(asyncio.run(main()))  # type: ignore[attr-defined]


def run_python(port: int, workload: Workload, duration: float, connections: int, processes: int) -> LoadResult:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    per_process = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    workers = [
        context.Process(target=_python_worker, args=(port, workload, duration, n, os.getpid() + i, queue))
        for i, n in enumerate(per_process)
    ]
    for worker in workers:
        worker.start()
    parts = [queue.get(timeout=duration + 60) for _ in workers]
    for worker in workers:
        worker.join(10)
    latencies = sorted(lat for part in parts for lat in part[0])
    statuses: Counter[int] = Counter()
    for part in parts:
        statuses.update(part[1])
    socket_errors = sum(part[2] for part in parts)
    bad_statuses = sum(n for status, n in statuses.items() if status >= 400)
    errors = socket_errors + bad_statuses
    elapsed = max(part[3] for part in parts)
    return LoadResult(
        requests=len(latencies),
        duration=elapsed,
        errors=errors,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        statuses=dict(statuses),
        error_kinds={k: v for k, v in (("socket/timeout", socket_errors), ("non-2xx/3xx", bad_statuses)) if v},
    )


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


class LoadGenerator:
    """wrk when present (unless forced off), else the asyncio fallback; same workloads either way."""

    def __init__(self, prefer: str = "auto", threads: int = 2) -> None:
        self.use_wrk = prefer != "python" and wrk_binary() is not None
        if prefer == "wrk" and not self.use_wrk:
            raise SystemExit("--loadgen wrk: wrk is not installed (apt-get install -y wrk)")
        self.threads = threads
        self._scripts: dict[str, Path] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="contacts-bench-lua-"))

    @property
    def description(self) -> str:
        if self.use_wrk:
            return f"{wrk_version()} (-t{self.threads}, Lua-scripted random requests)"
        return f"asyncio raw-socket fallback ({self.threads} processes)"

    def run(self, port: int, workload: Workload, duration: float, connections: int) -> LoadResult:
        if self.use_wrk:
            script = self._scripts.get(workload.name)
            if script is None:
                script = self._scripts[workload.name] = write_lua(workload, self._dir)
            return run_wrk(port, script, duration, connections, self.threads)
        return run_python(port, workload, duration, connections, self.threads)

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Replay, burst, single requests
# ---------------------------------------------------------------------------------------------------------------


async def replay(port: int, requests: list[bytes], concurrency: int) -> Counter[int]:
    """Send every request once (warm-up), `concurrency` connections at a time; the statuses seen."""
    statuses: Counter[int] = Counter()
    queue = list(reversed(requests))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while queue:
                writer.write(queue.pop())
                statuses[await _read_response(reader)] += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, max(1, len(requests))))))
    return statuses


async def burst(port: int, request: bytes, n: int) -> list[tuple[int, float]]:
    """Open `n` connections, then send `request` on all of them at once; (status, seconds) per request."""
    connections = await asyncio.gather(*(asyncio.open_connection(HOST, port) for _ in range(n)))
    await asyncio.sleep(0.2)  # let the server accept every connection before the burst

    async def one(reader: asyncio.StreamReader, start: float) -> tuple[int, float]:
        status = await asyncio.wait_for(_read_response(reader), 10)
        return status, time.perf_counter() - start

    start = time.perf_counter()
    for _, writer in connections:
        writer.write(request)
    results = await asyncio.gather(*(one(reader, start) for reader, _ in connections), return_exceptions=True)
    for _, writer in connections:
        writer.close()
    return [r if isinstance(r, tuple) else (0, 0.0) for r in results]


def request(
    port: int, method: str, path: str, token: str | None = None, body: object | None = None, timeout: float = 30
) -> tuple[int, bytes]:
    status, _, data = request_with_headers(port, method, path, token, body, timeout)
    return status, data


def request_with_headers(
    port: int, method: str, path: str, token: str | None = None, body: object | None = None, timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
