"""The servers under test: `contacts-api serve` and the two peers under plain uvicorn, each in a process group of
its own (stopped by that group's id), plus /metrics scraping."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.core.config import Settings
from bench.loadgen import HOST, request

PROJECT_ROOT = Path(__file__).resolve().parents[1]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def clean_environment(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The caller's environment minus every setting the app reads, so nothing ambient leaks into a server; `root`
    (the tree whose `app` package runs: this project, or a git worktree of another revision) first on PYTHONPATH."""
    names = {name.upper() for name in Settings.model_fields} | {"PROMETHEUS_MULTIPROC_DIR"}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    workers: int
    workdir: Path
    has_metrics: bool
    health_path: str = "/health"
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"{self.name}.log"

    def start(self) -> Server:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.workdir,  # not the project: no stray .env or contacts.db is picked up
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops the uvicorn workers too
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            with contextlib.suppress(OSError):
                status, _ = request(self.port, "GET", self.health_path, timeout=2)
                if status == 200:
                    # Several workers: give the others a moment to bind too.
                    time.sleep(0.5 * (self.workers - 1))
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout} s: {self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.process is None:
            return
        pgid = self.process.pid  # the group this process leads (start_new_session)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.process.wait(5)
        # Workers that outlived the master would still be in the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        self.process = None

    def metrics(self) -> dict[str, float]:
        if not self.has_metrics:
            return {}
        status, body = request(self.port, "GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"{self.name}: /metrics answered {status}")
        return parse_metrics(body.decode())


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return out


def ours(
    name: str,
    workdir: Path,
    workers: int,
    settings_env: dict[str, str],
    port: int | None = None,
    root: Path = PROJECT_ROOT,
) -> Server:
    """`contacts-api serve` (the console script's own entry point), migrations already applied; the code of the tree
    at `root` (see `clean_environment`)."""
    port = port or free_port()
    env = clean_environment(root) | settings_env | {"MEDIA_ROOT": str(workdir / "media")}
    argv = [
        sys.executable,
        "-c",
        "from app.cli import main; main()",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-migrate",
    ]
    return Server(name, argv, env, port, workers, workdir, has_metrics=True)


def peer(name: str, module: str, workdir: Path, workers: int, env_extra: dict[str, str]) -> Server:
    """A peer app under uvicorn, run the way `contacts-api serve` runs ours: uvloop, httptools, no access log."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        f"{module}:app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-proxy-headers",
        "--no-server-header",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return Server(name, argv, clean_environment() | env_extra, port, workers, workdir, has_metrics=False)
