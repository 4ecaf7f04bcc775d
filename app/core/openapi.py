"""Error responses for route declarations, so the OpenAPI schema lists every status a route can answer."""

from __future__ import annotations

from typing import Any

from app.core.errors import ErrorBody

_DESCRIPTIONS = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation error",
    429: "Too many requests",
    503: "Service unavailable",
}


def errors(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in (*status_codes, 422, 503)}
