"""Wiring the pages into the application: their routes, static files, security headers and how a page answers a
missing session, a forged form or a refused action (a page or a redirect, never JSON)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles

from app.web.account_pages import router as account_router
from app.web.contact_pages import router as contact_router
from app.web.rendering import redirect, render
from app.web.security import (
    AdminOnly,
    CsrfRefused,
    LoginRequired,
    SecurityHeaders,
    clear_session_cookie,
    login_redirect_target,
)
from app.web.settings_pages import router as settings_router

STATIC = Path(__file__).parent / "static"


async def _login_required(request: Request, _: Exception) -> Response:
    target = login_redirect_target(request) if request.method == "GET" else "/login?notice=session-ended"
    response: Response
    if request.headers.get("hx-request"):
        # An htmx request follows no redirect into its target: ask it to load the login page instead.
        response = Response(status_code=401, headers={"HX-Redirect": target})
    else:
        response = redirect(target)
    if request.cookies.get("session"):
        clear_session_cookie(request, response)
    return response


async def _admin_only(request: Request, _: Exception) -> Response:
    context = {"heading": "Administrators only", "message": "Only administrators can open this page."}
    return render(request, "error.html", context, status_code=403)


async def _csrf_refused(request: Request, _: Exception) -> Response:
    context = {
        "heading": "This form has expired",
        "message": "The form was not sent from this site's current page. Go back, reload the page and try again.",
    }
    return render(request, "error.html", context, status_code=403)


def install(app: FastAPI) -> None:
    """Serve the pages at the site's root, beside the REST API (/api/v1) and CardDAV (/dav)."""
    app.include_router(account_router)
    app.include_router(settings_router)
    app.include_router(contact_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(AdminOnly, _admin_only)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_middleware(SecurityHeaders)
