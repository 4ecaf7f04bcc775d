"""File storage behind an interface: a local folder by default (served under /media); another backend (an
object store) can stand in where several hosts must share files."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from pathlib import Path, PurePosixPath
from typing import Protocol

from app.core.config import Settings
from app.core.errors import InsufficientStorage

MEDIA_URL_PATH = "/media"


class Storage(Protocol):
    async def save(self, name: str, data: bytes) -> str:
        """Store `data` under `name`; returns its public URL."""
        ...

    async def delete(self, name: str) -> None: ...

    def name_from_url(self, url: str) -> str | None: ...


class LocalStorage:
    def __init__(self, root: str | Path, base_url: str) -> None:
        self.root = Path(root).resolve()
        self.base_url = base_url.rstrip("/") + MEDIA_URL_PATH

    def _path(self, name: str) -> Path:
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError("invalid storage name")
        return self.root / relative

    async def save(self, name: str, data: bytes) -> str:
        path = self._path(name)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(path.suffix + ".tmp")
            try:
                temporary.write_bytes(data)
                os.replace(temporary, path)
            except OSError:
                with contextlib.suppress(OSError):
                    temporary.unlink(missing_ok=True)  # no half-written file left behind
                raise

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage from exc
            raise
        return f"{self.base_url}/{name}"

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._path(name).unlink, missing_ok=True)

    def name_from_url(self, url: str) -> str | None:
        prefix = self.base_url + "/"
        return url[len(prefix) :] if url.startswith(prefix) else None


def local_storage(settings: Settings) -> LocalStorage:
    return LocalStorage(settings.media_root, settings.public_base_url)
