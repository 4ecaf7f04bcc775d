"""The service's error types and the one handler that renders them all as `{"error", "detail"}`."""

from __future__ import annotations

import errno
import logging
import re
import secrets
import socket
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str
    detail: Any


class AppError(Exception):
    """Every error the service answers on purpose. Each class declares its own `code` (the `error` of the body,
    one code per state, listed in docs/errors.md), its status and its default detail (the docstring's first line);
    a test checks that every subclass declares a code of its own."""

    code: ClassVar[str] = "AppError"
    status_code = 400
    default_headers: ClassVar[dict[str, str] | None] = None
    # True when the work done before the error must still be committed (e.g. revoking a stolen token family).
    keep_changes = False

    def __init__(self, detail: str | None = None, status_code: int | None = None) -> None:
        self.detail = detail or self.default_detail()
        self.headers: dict[str, str] | None = dict(self.default_headers) if self.default_headers else None
        if status_code is not None:
            self.status_code = status_code
        super().__init__(self.detail)

    @classmethod
    def default_detail(cls) -> str:
        return cls.__doc__.strip().splitlines()[0] if cls.__doc__ else cls.__name__


class NotFound(AppError):
    """The resource was not found."""

    code = "NotFound"
    status_code = 404


class Conflict(AppError):
    """The request conflicts with existing data."""

    code = "Conflict"
    status_code = 409


class Unauthorized(AppError):
    """Authentication is required or the credentials are invalid."""

    code = "Unauthorized"
    status_code = 401
    default_headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}


class Forbidden(AppError):
    """You are not allowed to do this."""

    code = "Forbidden"
    status_code = 403


class RateLimited(AppError):
    """Too many requests; try again later."""

    code = "RateLimited"
    status_code = 429

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(max(1, retry_after))}


class ServiceUnavailable(AppError):
    """The service is temporarily unavailable."""

    code = "ServiceUnavailable"
    status_code = 503
    default_headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1"}


class PayloadTooLarge(AppError):
    """The request body is too large."""

    code = "PayloadTooLarge"
    status_code = 413


class UnsupportedMediaType(AppError):
    """The uploaded content is not of a supported type."""

    code = "UnsupportedMediaType"
    status_code = 415


class InsufficientStorage(AppError):
    """The server has no room to store this; try again later."""

    code = "InsufficientStorage"
    status_code = 507


def error_response(status_code: int, error: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status_code, headers=headers)


_HTTP_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "ValidationError",
    429: "RateLimited",
}


# What the framework and the handlers below answer on their own, with no AppError behind it.
FRAMEWORK_ERRORS = {
    "BadRequest": (400, "The request body could not be parsed (not UTF-8 JSON, or a malformed form)."),
    "MethodNotAllowed": (405, "The path does not take this method."),
    "ValidationError": (422, "A list of {loc, msg, type}: which input is wrong and why."),
    "HTTPError": (400, "Any other status the framework answers (rare)."),
    "InternalError": (500, "An unexpected error; the body's request_id is also in the log."),
}


def error_catalogue() -> dict[str, tuple[int, str]]:
    """Every `error` code the service can answer: each AppError class's, and the framework's."""
    catalogue = dict(FRAMEWORK_ERRORS)
    pending: list[type[AppError]] = [AppError]
    while pending:
        error = pending.pop()
        pending.extend(error.__subclasses__())
        if error is not AppError:
            catalogue[error.code] = (error.status_code, error.default_detail())
    return dict(sorted(catalogue.items()))


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Validation errors without echoing the (possibly huge or secret) input back."""
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "ValidationError", _validation_details(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = _HTTP_NAMES.get(exc.status_code, "HTTPError")
        return error_response(exc.status_code, name, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeoutError)
    @app.exception_handler(OSError)
    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, OSError) and not _is_connection_failure(exc):
            return _internal_error(request, exc)  # a full disk, a missing file: not the database's absence
        logger.warning("database unavailable: %s", exc.__class__.__name__)
        return error_response(
            503, "ServiceUnavailable", "The database is unavailable; try again shortly.", {"Retry-After": "1"}
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal_error(request, exc)

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return error_response(
                503, "ServiceUnavailable", "The database connection was lost; try again.", {"Retry-After": "1"}
            )
        return _internal_error(request, exc)


# A caller's own X-Request-ID is kept when it is a plain token; anything else is replaced by one of ours.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def _internal_error(request: Request, exc: BaseException) -> JSONResponse:
    """500 with a request id that is also in the log line holding the traceback, and nothing of the error's
    own text (which may hold data) in the body."""
    offered = request.headers.get("x-request-id", "")
    request_id = offered if _REQUEST_ID.fullmatch(offered) else secrets.token_hex(8)
    logger.error(
        "unexpected error, request id %s: %s %s",
        request_id,
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    detail = f"An unexpected error occurred; quote request id {request_id} when reporting it."
    body = {"error": "InternalError", "detail": detail, "request_id": request_id}
    return JSONResponse(body, status_code=500, headers={"X-Request-ID": request_id})


def _is_connection_failure(exc: OSError) -> bool:
    """Whether an OSError means a server (the database) could not be reached, as opposed to local trouble."""
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror):
        return True
    # asyncio raises a plain OSError, without errno, when every address of a host refused the connection.
    return exc.errno in (None, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL) and not exc.filename
