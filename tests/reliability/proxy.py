"""A TCP proxy to a Redis server that the tests can cut: one host's view of Redis becomes unreachable while the
other hosts still reach it (the case the README's "Limit" describes).

The proxy runs on an event loop in a thread of its own, so the test's own loop (the load generator) does not slow
it down. `cut()` aborts every connection through it and aborts each new one at once (the client sees a reset: an
unreachable server); `restore()` lets connections through again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from tests.servers import free_port


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self.is_cut = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer.transport, upstream_writer.transport}
        self._transports |= pair
        try:
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        finally:
            self._transports -= pair

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                target.write(data)
                await target.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            target.transport.abort()

    async def _abort_all(self) -> None:
        self.is_cut = True
        for transport in list(self._transports):
            transport.abort()

    def cut(self) -> None:
        """Every connection through the proxy fails, now and until `restore()`."""
        self._call(self._abort_all())

    def restore(self) -> None:
        self.is_cut = False

    def close(self) -> None:
        async def stop() -> None:
            await self._abort_all()
            if self._server is not None:
                self._server.close()

        with contextlib.suppress(Exception):
            self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
