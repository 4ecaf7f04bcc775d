"""Error responses for route declarations, so the OpenAPI schema lists every status a route can answer and every
error code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from app.core.errors import ErrorBody, error_catalogue

_DESCRIPTIONS = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    412: "Precondition failed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation error",
    429: "Too many requests",
    503: "Service unavailable",
}
# What any operation that takes a body can answer before its own code runs: a body that cannot be decoded at all
# (not UTF-8, a broken multipart envelope) is a 400 from the framework; one over MAX_REQUEST_BYTES is a 413.
_BODY_ERRORS = {
    "400": "The request body could not be parsed (not UTF-8 JSON, or a malformed form)",
    "413": "The request body is larger than the service accepts",
}


_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


def errors(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in (*status_codes, 422, 503)}


def document_body_errors(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The app's `openapi()` with the body errors above added to every operation that has a request body."""
    generate = app.openapi  # FastAPI's own: builds the schema once and keeps it in app.openapi_schema

    def openapi() -> dict[str, Any]:
        schema = generate()
        # The `error` of every error body is one code of the catalogue (docs/errors.md): a client can branch on it.
        error_body = schema.get("components", {}).get("schemas", {}).get("ErrorBody")
        if error_body is not None:
            error_body["properties"]["error"]["enum"] = list(error_catalogue())
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if isinstance(operation, dict) and "requestBody" in operation:
                    responses = operation.setdefault("responses", {})
                    for code, description in _BODY_ERRORS.items():
                        responses.setdefault(code, {"description": description, "content": _ERROR_CONTENT})
        return schema

    return openapi
