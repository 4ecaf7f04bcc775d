"""The service's error types and the one handler that renders them all as `{"error", "detail"}`."""

from __future__ import annotations

import logging
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

    status_code = 404


class Conflict(AppError):
    """The request conflicts with existing data."""

    status_code = 409


class Unauthorized(AppError):
    """Authentication is required or the credentials are invalid."""

    status_code = 401
    default_headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}


class Forbidden(AppError):
    """You are not allowed to do this."""

    status_code = 403


class RateLimited(AppError):
    """Too many requests; try again later."""

    status_code = 429

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(max(1, retry_after))}


class ServiceUnavailable(AppError):
    """The service is temporarily unavailable."""

    status_code = 503
    default_headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1"}


class PayloadTooLarge(AppError):
    """The request body is too large."""

    status_code = 413


class UnsupportedMediaType(AppError):
    """The uploaded content is not of a supported type."""

    status_code = 415


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


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Validation errors without echoing the (possibly huge or secret) input back."""
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return error_response(exc.status_code, type(exc).__name__, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "ValidationError", _validation_details(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = _HTTP_NAMES.get(exc.status_code, "HTTPError")
        return error_response(exc.status_code, name, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeoutError)
    @app.exception_handler(ConnectionError)
    @app.exception_handler(OSError)
    async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        logger.warning("database unavailable: %s", exc.__class__.__name__)
        return error_response(
            503, "ServiceUnavailable", "The database is unavailable; try again shortly.", {"Retry-After": "1"}
        )

    @app.exception_handler(DBAPIError)
    async def _database_error(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return error_response(
                503, "ServiceUnavailable", "The database connection was lost; try again.", {"Retry-After": "1"}
            )
        logger.exception("database error")
        return error_response(500, "InternalError", "An unexpected database error occurred.")
