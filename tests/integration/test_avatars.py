"""Avatars end to end: upload, resize, serve, replace and delete; refusal of what is not a small image."""

from __future__ import annotations

import asyncio
import io
import math
import struct
import threading
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from limits import parse as parse_limit
from PIL import BmpImagePlugin, Image, ImageFile, TiffImagePlugin
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.users.avatars import image_pool
from app.users.models import User
from tests.factories import auth_headers, make_user

API = "/api/v1"


# -- helpers ----------------------------------------------------------------------------------------------------


def image_bytes(image_format: str, size: tuple[int, int] = (600, 400)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format=image_format)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def one_colour_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of one colour: tiny on the wire, width x height pixels once decoded."""
    compressor = zlib.compressobj(9)
    rows = (b"\x00" + bytes((width + 7) // 8)) * 100  # filter byte + packed pixels, 100 rows at a time
    data = b"".join(compressor.compress(rows) for _ in range(height // 100)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


async def upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    data: bytes,
    filename: str = "avatar.png",
    content_type: str = "image/png",
) -> httpx.Response:
    return await client.put(f"{API}/users/me/avatar", headers=headers, files={"file": (filename, data, content_type)})


def stored_avatars(settings: Settings) -> set[Path]:
    return set((Path(settings.media_root) / "avatars").glob("*"))


def path_of(url: str) -> str:
    return urlsplit(url).path


async def reload_user(db: AsyncSession, user_id: int) -> User | None:
    await db.commit()  # end the test session's transaction so the app's commits are seen
    return await db.get(User, user_id, populate_existing=True)


# -- upload, serve, replace, delete ----------------------------------------------------------------------------------


async def test_upload_stores_resized_avatar_served_at_avatar_url(client, db, settings):
    user = await make_user(db, settings)
    headers = auth_headers(settings, user)
    assert (await client.get(f"{API}/users/me", headers=headers)).json()["avatar_url"] is None  # cache warm

    response = await upload(client, headers, image_bytes("PNG", (600, 400)))

    assert response.status_code == 200, response.text
    url = response.json()["avatar_url"]
    assert url.startswith("http://contacts.test/media/avatars/"), url
    assert (await client.get(f"{API}/users/me", headers=headers)).json()["avatar_url"] == url
    row = await reload_user(db, user.id)
    assert row is not None
    assert row.avatar_url == url
    served = await client.get(path_of(url))
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(served.content)) as image:
        assert image.format == "WEBP"
        assert max(image.size) <= settings.avatar_size
        assert image.size[0] == settings.avatar_size
        assert abs(image.size[1] - settings.avatar_size * 400 / 600) <= 1
    assert (Path(settings.media_root) / "avatars" / Path(path_of(url)).name).read_bytes() == served.content


@pytest.mark.parametrize(
    ("image_format", "content_type"), [("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")]
)
async def test_upload_accepts_other_supported_formats(client, db, settings, image_format, content_type):
    user = await make_user(db, settings)

    response = await upload(
        client, auth_headers(settings, user), image_bytes(image_format, (300, 900)), "a.img", content_type
    )

    assert response.status_code == 200, response.text
    served = await client.get(path_of(response.json()["avatar_url"]))
    with Image.open(io.BytesIO(served.content)) as image:
        assert image.size[1] == settings.avatar_size
        assert image.size[0] <= settings.avatar_size


async def test_avatar_url_is_built_from_public_base_url_not_host_header(client, db, settings):
    user = await make_user(db, settings)

    response = await upload(client, {**auth_headers(settings, user), "Host": "evil.example"}, image_bytes("PNG"))

    assert response.status_code == 200, response.text
    assert response.json()["avatar_url"].startswith("http://contacts.test/media/avatars/")


async def test_replacing_avatar_deletes_the_previous_file(client, db, settings):
    user = await make_user(db, settings)
    headers = auth_headers(settings, user)
    first = (await upload(client, headers, image_bytes("PNG"))).json()["avatar_url"]

    response = await upload(client, headers, image_bytes("JPEG"), "b.jpg", "image/jpeg")

    assert response.status_code == 200, response.text
    second = response.json()["avatar_url"]
    assert second != first
    assert (await client.get(path_of(first))).status_code == 404
    assert (await client.get(path_of(second))).status_code == 200
    assert not (Path(settings.media_root) / "avatars" / Path(path_of(first)).name).exists()


async def test_delete_avatar_resets_it_to_null_and_removes_the_file(client, db, settings):
    user = await make_user(db, settings)
    headers = auth_headers(settings, user)
    url = (await upload(client, headers, image_bytes("PNG"))).json()["avatar_url"]
    assert (await client.get(f"{API}/users/me", headers=headers)).json()["avatar_url"] == url  # cache warm

    response = await client.delete(f"{API}/users/me/avatar", headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["avatar_url"] is None
    assert (await client.get(f"{API}/users/me", headers=headers)).json()["avatar_url"] is None
    row = await reload_user(db, user.id)
    assert row is not None
    assert row.avatar_url is None
    assert (await client.get(path_of(url))).status_code == 404


async def test_upload_without_token_returns_401(client, db, settings):
    before = stored_avatars(settings)

    response = await upload(client, {}, image_bytes("PNG"))

    assert response.status_code == 401, response.text
    assert stored_avatars(settings) == before


# -- refusals ---------------------------------------------------------------------------------------------------------

NOT_IMAGES = {
    "text_renamed_png": (b"just some notes, not a picture\n" * 20, "notes.png", "image/png"),
    "pdf": (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n", "a.pdf", "image/png"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect/></svg>', "a.svg", "image/svg+xml"),
    "bmp": (image_bytes("BMP", (64, 64)), "a.bmp", "image/bmp"),
    "truncated_png": (image_bytes("PNG", (64, 64))[:60], "a.png", "image/png"),
}


@pytest.mark.parametrize("kind", list(NOT_IMAGES))
async def test_upload_of_a_non_image_returns_415(client, db, settings, kind):
    user = await make_user(db, settings)
    data, filename, content_type = NOT_IMAGES[kind]
    before = stored_avatars(settings)

    response = await upload(client, auth_headers(settings, user), data, filename, content_type)

    assert response.status_code == 415, response.text
    assert response.json()["error"] == "NotAnImage"
    row = await reload_user(db, user.id)
    assert row is not None
    assert row.avatar_url is None
    assert stored_avatars(settings) == before


async def test_upload_of_exactly_avatar_max_bytes_is_accepted(client, db, settings):
    user = await make_user(db, settings)
    png = image_bytes("PNG", (64, 64))
    data = png + bytes(settings.avatar_max_bytes - len(png))  # a valid PNG followed by padding

    response = await upload(client, auth_headers(settings, user), data)

    assert response.status_code == 200, response.text
    assert response.json()["avatar_url"].startswith("http://contacts.test/media/avatars/")


@pytest.mark.parametrize("extra", [1, 200_000], ids=["just_over", "far_over"])
async def test_upload_over_avatar_max_bytes_returns_413(client, db, settings, extra):
    user = await make_user(db, settings)
    png = image_bytes("PNG", (64, 64))
    data = png + bytes(settings.avatar_max_bytes + extra - len(png))  # a valid PNG followed by padding
    before = stored_avatars(settings)

    response = await upload(client, auth_headers(settings, user), data)

    assert response.status_code == 413, response.text
    assert response.json()["error"] == "PayloadTooLarge"
    row = await reload_user(db, user.id)
    assert row is not None
    assert row.avatar_url is None
    assert stored_avatars(settings) == before


async def test_streamed_upload_over_avatar_max_bytes_returns_413(client, db, settings):
    # No Content-Length (chunked transfer): the size is only known while the body streams in.
    user = await make_user(db, settings)
    png = image_bytes("PNG", (64, 64))
    data = png + bytes(settings.avatar_max_bytes + 200_000 - len(png))
    boundary = "avatar-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    before = stored_avatars(settings)

    response = await client.put(
        f"{API}/users/me/avatar",
        content=chunks(),
        headers={**auth_headers(settings, user), "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )

    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "PayloadTooLarge"
    row = await reload_user(db, user.id)
    assert row is not None
    assert row.avatar_url is None
    assert stored_avatars(settings) == before


@pytest.mark.parametrize("side", [6_000, 20_000], ids=["over_avatar_max_pixels", "decompression_bomb"])
async def test_upload_of_an_image_with_huge_dimensions_returns_413_before_decoding(client, db, settings, side):
    user = await make_user(db, settings)
    data = one_colour_png(side, side)
    assert len(data) < settings.avatar_max_bytes  # small on the wire: only the declared dimensions are huge
    before = stored_avatars(settings)

    response = await upload(client, auth_headers(settings, user), data)

    assert response.status_code == 413, response.text
    assert response.json()["error"] == "ImageTooLarge"
    row = await reload_user(db, user.id)
    assert row is not None
    assert row.avatar_url is None
    assert stored_avatars(settings) == before


# -- denial of service ---------------------------------------------------------------------------------------------


async def test_a_5000_by_5000_png_returns_413_without_decoding_a_pixel(client, db, settings, monkeypatch):
    user = await make_user(db, settings)
    out = io.BytesIO()
    Image.new("1", (5_000, 5_000), 1).save(out, format="PNG")
    data = out.getvalue()
    assert len(data) < settings.avatar_max_bytes  # small on the wire: 25 megapixels (75 MB as RGB) once decoded
    decoded: list[str | None] = []
    load = ImageFile.ImageFile.load

    def counting_load(image: ImageFile.ImageFile) -> Any:
        decoded.append(image.format)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    before = stored_avatars(settings)

    response = await upload(client, auth_headers(settings, user), data)

    assert response.status_code == 413, response.text
    assert response.json()["error"] == "ImageTooLarge"
    assert decoded == []
    row = await reload_user(db, user.id)
    assert row is not None
    assert row.avatar_url is None
    assert stored_avatars(settings) == before


async def test_an_image_of_exactly_avatar_max_pixels_is_accepted(client, db, settings):
    user = await make_user(db, settings)
    side = math.isqrt(settings.avatar_max_pixels)
    out = io.BytesIO()
    Image.new("1", (side, settings.avatar_max_pixels // side), 1).save(out, format="PNG")

    response = await upload(client, auth_headers(settings, user), out.getvalue())

    assert response.status_code == 200, response.text
    assert response.json()["avatar_url"].startswith("http://contacts.test/media/avatars/")


@pytest.mark.parametrize(
    ("image_format", "parser"), [("BMP", BmpImagePlugin.BmpImageFile), ("TIFF", TiffImagePlugin.TiffImageFile)]
)
async def test_another_pillow_format_named_png_returns_415_and_its_parser_never_runs(
    client, db, settings, monkeypatch, image_format, parser
):
    user = await make_user(db, settings)
    data = image_bytes(image_format, (64, 64))
    parsed: list[str] = []
    parse = parser._open

    def counting_open(image: ImageFile.ImageFile) -> None:
        parsed.append(image_format)
        parse(image)

    monkeypatch.setattr(parser, "_open", counting_open)
    before = stored_avatars(settings)

    response = await upload(client, auth_headers(settings, user), data, "avatar.png", "image/png")

    assert response.status_code == 415, response.text
    assert response.json()["error"] == "NotAnImage"
    assert parsed == []
    row = await reload_user(db, user.id)
    assert row is not None
    assert row.avatar_url is None
    assert stored_avatars(settings) == before


async def test_the_upload_past_the_per_user_rate_limit_returns_429(client, db, settings):
    user = await make_user(db, settings)
    headers = auth_headers(settings, user)
    allowed = parse_limit(settings.rate_limit_avatar_upload).amount
    png = image_bytes("PNG", (32, 32))
    accepted = [await upload(client, headers, png) for _ in range(allowed)]
    assert [r.status_code for r in accepted] == [200] * allowed
    last_url = accepted[-1].json()["avatar_url"]
    before = stored_avatars(settings)

    response = await upload(client, headers, png)

    assert response.status_code == 429, response.text
    assert response.json()["error"] == "RateLimited"
    assert int(response.headers["Retry-After"]) >= 1
    row = await reload_user(db, user.id)
    assert row is not None
    assert row.avatar_url == last_url
    assert stored_avatars(settings) == before
    other = await make_user(db, settings)
    assert (await upload(client, auth_headers(settings, other), png)).status_code == 200  # per user, not global


async def test_upload_while_the_image_pool_is_full_returns_503_with_retry_after(client, db, settings):
    user = await make_user(db, settings)
    headers = auth_headers(settings, user)
    pool = image_pool(settings.avatar_workers, settings.avatar_queue)
    release = threading.Event()
    blockers = [asyncio.create_task(pool.run(release.wait)) for _ in range(pool.capacity)]
    try:
        await asyncio.sleep(0)  # the blockers take every place: running or waiting
        assert pool.admitted == pool.capacity
        before = stored_avatars(settings)

        response = await upload(client, headers, image_bytes("PNG"))

        assert response.status_code == 503, response.text
        assert response.json()["error"] == "ImagePoolBusy"
        assert int(response.headers["Retry-After"]) >= 1
        row = await reload_user(db, user.id)
        assert row is not None
        assert row.avatar_url is None
        assert stored_avatars(settings) == before
    finally:
        release.set()
        await asyncio.gather(*blockers)
    assert pool.admitted == 0
    assert (await upload(client, headers, image_bytes("PNG"))).status_code == 200  # free again
