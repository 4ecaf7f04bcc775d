"""Avatar images: checked for what they really are, refused when they would decompress into a bomb, resized."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from app.core.errors import AppError, UnsupportedMediaType

ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF"})


class NotAnImage(UnsupportedMediaType):
    """The file is not a PNG, JPEG, WebP or GIF image."""


class ImageTooLarge(AppError):
    """The image's dimensions are too large."""

    status_code = 413


def make_avatar(data: bytes, size: int, max_pixels: int) -> bytes:
    """A square-bounded WebP of at most `size` pixels a side. Blocking: run it in a thread."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            # Only the header is read so far: refuse huge dimensions before any pixel is decoded.
            width, height = image.size
            if image.format not in ACCEPTED_FORMATS:
                raise NotAnImage
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
