"""Avatar images: checked for what they really are, refused when they would decompress into a bomb, resized on a
bounded pool of threads of their own."""

from __future__ import annotations

import asyncio
import io
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar

from PIL import Image, UnidentifiedImageError

from app.core.errors import AppError, ServiceUnavailable, UnsupportedMediaType

# Only these decoders ever see an upload: Pillow's other parsers (TIFF, PSD, ...) are never tried on one.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")

T = TypeVar("T")


class NotAnImage(UnsupportedMediaType):
    """The file is not a PNG, JPEG, WebP or GIF image."""

    code = "NotAnImage"


class ImageTooLarge(AppError):
    """The image's dimensions are too large."""

    code = "ImageTooLarge"
    status_code = 413


class ImagePoolBusy(ServiceUnavailable):
    """Too many images are being processed; try again shortly."""

    code = "ImagePoolBusy"


class ImagePool:
    """Threads of their own for image work, so that uploads can neither take the default pool that other blocking
    work shares nor queue without end: past `workers` running and `queue` waiting, `run` refuses at once."""

    def __init__(self, workers: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="avatar")
        self.capacity = workers + queue
        self._admitted = 0  # running or waiting; a job leaves when its thread is done, even if its caller left
        self._lock = threading.Lock()

    @property
    def admitted(self) -> int:
        return self._admitted

    async def run(self, function: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._admitted >= self.capacity:
                raise ImagePoolBusy
            self._admitted += 1
        try:
            future: Future[T] = self._executor.submit(function, *args)
        except BaseException:
            self._leave()
            raise
        future.add_done_callback(lambda _: self._leave())
        return await asyncio.wrap_future(future)

    def _leave(self) -> None:
        with self._lock:
            self._admitted -= 1


@lru_cache(maxsize=4)
def image_pool(workers: int, queue: int) -> ImagePool:
    """The process's image pool for these settings (AVATAR_WORKERS, AVATAR_QUEUE)."""
    return ImagePool(workers, queue)


def make_avatar(data: bytes, size: int, max_pixels: int) -> bytes:
    """A square-bounded WebP of at most `size` pixels a side. Blocking: run it in a thread."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            # Only the header is read so far: refuse huge dimensions before any pixel is decoded.
            width, height = image.size
            if width * height > max_pixels or width <= 0 or height <= 0:
                raise ImageTooLarge
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
            image.seek(0)
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise NotAnImage if isinstance(exc, UnidentifiedImageError) else ImageTooLarge from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise NotAnImage from exc
    converted = image.convert("RGBA") if image.mode in ("RGBA", "LA", "P", "PA") else image.convert("RGB")
    converted.thumbnail((size, size))
    out = io.BytesIO()
    converted.save(out, format="WEBP", quality=85)
    return out.getvalue()
