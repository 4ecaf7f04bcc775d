"""The pages' protections: the session cookie and who it names, anti-forgery tokens on every form, and the headers
that keep the pages out of frames and foreign scripts out of the pages."""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request, Response
from starlette.datastructures import FormData, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import web_sessions
from app.auth.schemas import AuthUser, Role
from app.core.config import Settings

SESSION_COOKIE = "session"
VISITOR_COOKIE = "visitor"  # a random id before login: what a login, register or reset form's token is bound to
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

# Pages only: the JSON API, CardDAV and the interactive API docs (which load their own scripts) keep theirs.
_NOT_PAGES = ("/api/", "/dav", "/.well-known/", "/docs", "/redoc", "/openapi.json", "/metrics", "/health")
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # Reset links carry their token in the address: never send it on to anyone.
    "referrer-policy": "no-referrer",
}


class LoginRequired(Exception):
    """No live session: the page sends the visitor to the login form (and drops a dead cookie)."""


class AdminOnly(Exception):
    """A live session of an account that is not an administrator."""


class CsrfRefused(Exception):
    """A form posted without this session's anti-forgery token."""


class SecurityHeaders:
    """Adds the pages' security headers to every page response (errors and redirects included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope["path"]).startswith(_NOT_PAGES):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def secure_cookies(request: Request) -> bool:
    settings: Settings = request.app.state.settings
    return request.url.scheme == "https" or settings.environment == "production"


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    settings: Settings = request.app.state.settings
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.refresh_token_ttl,
        httponly=True,
        secure=secure_cookies(request),
        samesite="lax",
        path="/",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, secure=secure_cookies(request), samesite="lax")


def csrf_binding(request: Request) -> str:
    """What this request's anti-forgery token is bound to: the session named by a (signed) session cookie, else
    the visitor cookie; a new visitor id is remembered on `request.state` for `set_visitor_cookie` to send."""
    settings: Settings = request.app.state.settings
    session_token = request.cookies.get(SESSION_COOKIE)
    if session_token:
        try:
            return web_sessions.session_id(settings, session_token)
        except web_sessions.InvalidWebSession:
            pass
    current = getattr(request.state, "new_visitor", None) or request.cookies.get(VISITOR_COOKIE, "")
    if 16 <= len(current) <= 64 and current.isalnum():
        return str(current)
    fresh = secrets.token_hex(16)
    request.state.new_visitor = fresh
    return fresh


def form_token(request: Request) -> str:
    settings: Settings = request.app.state.settings
    return web_sessions.csrf_token(settings, csrf_binding(request))


def set_visitor_cookie(request: Request, response: Response) -> None:
    fresh = getattr(request.state, "new_visitor", None)
    if fresh:
        response.set_cookie(
            VISITOR_COOKIE, fresh, httponly=True, secure=secure_cookies(request), samesite="lax", path="/"
        )


class Viewer:
    """Who is looking at a page: the account and its session id (the anti-forgery token's binding)."""

    def __init__(self, user: AuthUser, sid: str, csrf: str) -> None:
        self.user = user
        self.sid = sid
        self.csrf = csrf

    @property
    def is_admin(self) -> bool:
        return self.user.role == Role.admin


async def optional_viewer(request: Request) -> Viewer | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        user, sid = await web_sessions.resolve(request, token)
    except web_sessions.InvalidWebSession:
        return None
    settings: Settings = request.app.state.settings
    return Viewer(user, sid, web_sessions.csrf_token(settings, sid))


async def require_viewer(request: Request) -> Viewer:
    viewer = await optional_viewer(request)
    if viewer is None:
        raise LoginRequired
    return viewer


async def require_admin(viewer: Annotated[Viewer, Depends(require_viewer)]) -> Viewer:
    if not viewer.is_admin:
        raise AdminOnly
    return viewer


PageViewer = Annotated[Viewer, Depends(require_viewer)]
AdminViewer = Annotated[Viewer, Depends(require_admin)]
MaybeViewer = Annotated[Viewer | None, Depends(optional_viewer)]


async def checked_form(request: Request) -> FormData:
    """The posted form, once its anti-forgery token matched this session's (or, before login, this visitor's).
    htmx sends the token as a header; plain forms carry it in a hidden field."""
    settings: Settings = request.app.state.settings
    form = await request.form()
    presented = request.headers.get(CSRF_HEADER) or str(form.get(CSRF_FIELD) or "")
    if getattr(request.state, "new_visitor", None) is None and not (
        request.cookies.get(SESSION_COOKIE) or request.cookies.get(VISITOR_COOKIE)
    ):
        raise CsrfRefused  # no cookie at all: nothing the token could be bound to
    if not web_sessions.csrf_ok(settings, csrf_binding(request), presented):
        raise CsrfRefused
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]


def login_redirect_target(request: Request) -> str:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return "/login?next=" + quote(target, safe="")


def safe_next(value: str | None) -> str:
    """Only a path of this site (never `//elsewhere` or a scheme) is followed after login."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/contacts"
