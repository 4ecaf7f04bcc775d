"""The account pages: log in and out, create an account, the email-confirmed landing, forgotten and reset
password. They call the same services, rate limits and anti-enumeration answers as the JSON API's /auth routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError

from app.auth import service as auth_service
from app.auth import web_sessions
from app.auth.accounts import accounts_of
from app.auth.throttle import LoginThrottle
from app.core.config import SettingsDep
from app.core.db import SessionDep, commit
from app.core.dependencies import MailerDep
from app.core.errors import AppError
from app.core.rate_limit import enforce, rate_limiter, request_ip
from app.users import passwords
from app.users import service as users_service
from app.users.schemas import EmailRequest, ResetPasswordRequest, UserCreate
from app.web.rendering import field_errors, redirect, render, words_for
from app.web.security import CheckedForm, MaybeViewer, clear_session_cookie, safe_next, set_session_cookie

router = APIRouter(include_in_schema=False)

EMAIL = {"email": "Email"}


def _text(form: object, name: str, limit: int = 2048) -> str:
    value = form.get(name) if hasattr(form, "get") else None
    return value[:limit] if isinstance(value, str) else ""


@router.get("/")
async def home(viewer: MaybeViewer) -> Response:
    """The site's root: the address book for a live session, else the login form."""
    return redirect("/contacts" if viewer else "/login")


@router.get("/login")
async def login_page(
    request: Request, viewer: MaybeViewer, next: Annotated[str, Query(max_length=2048)] = ""
) -> Response:
    """The login form (a live session goes straight on to `next`)."""
    if viewer is not None:
        return redirect(safe_next(next))
    return render(request, "login.html", {"next": safe_next(next), "email": ""})


@router.post("/login")
async def login(request: Request, form: CheckedForm, session: SessionDep, settings: SettingsDep) -> Response:
    """Check the credentials as POST /api/v1/auth/login does (same limits and throttle, one answer for an
    unknown email and a wrong password), then start a browser session."""
    email, password, target = _text(form, "email", 320), _text(form, "password", 1024), _text(form, "next")
    context = {"next": safe_next(target), "email": email}
    if not email or not password:
        errors = {"email": "Enter your email address."} if not email else {}
        if not password:
            errors["password"] = "Enter your password."  # noqa: S105 - a message, not a secret
        return render(request, "login.html", context | {"errors": errors}, status_code=400)
    network = request_ip(request)
    throttle = LoginThrottle(rate_limiter(request), settings, email, network)
    try:
        await enforce(request, settings.rate_limit_login_ip, "login-ip", network)
        await throttle.check()
        try:
            account = await auth_service.authenticate(session, settings, accounts_of(request), email, password)
        except auth_service.InvalidCredentials:
            await throttle.failed()
            raise
    except AppError as error:
        status = error.status_code if error.status_code in (401, 403, 429) else 400
        refused = render(
            request, "login.html", context | {"errors": {"form": words_for(error.code)}}, status_code=status
        )
        if error.headers and "Retry-After" in error.headers:
            refused.headers["Retry-After"] = error.headers["Retry-After"]
        return refused
    token = await web_sessions.start(session, settings, account)
    await commit(session)
    response = redirect(safe_next(target))
    set_session_cookie(request, response, token)
    return response


@router.post("/logout")
async def logout(request: Request, form: CheckedForm, session: SessionDep, settings: SettingsDep) -> Response:
    """End this browser session (its record is revoked: a copied cookie is worthless too)."""
    await web_sessions.end(session, settings, request.cookies.get("session", ""))
    await commit(session)
    response = redirect("/login?notice=logged-out")
    clear_session_cookie(request, response)
    return response


@router.get("/register")
async def register_page(request: Request, viewer: MaybeViewer) -> Response:
    """The sign-up form."""
    return render(request, "register.html", {"email": ""}, viewer=viewer)


@router.post("/register")
async def register(
    request: Request, form: CheckedForm, session: SessionDep, settings: SettingsDep, mailer: MailerDep
) -> Response:
    """Create an account as POST /api/v1/auth/register does (same checks and limit); the confirmation mail follows."""
    email = _text(form, "email", 400)
    context = {"email": email}
    try:
        body = UserCreate(email=email, password=_text(form, "password", 1100))
    except ValidationError as error:
        errors = field_errors(error, {"email": "Email", "password": "Password"})
        return render(request, "register.html", context | {"errors": errors}, status_code=400)
    try:
        await enforce(request, settings.rate_limit_register_ip, "register-ip", request_ip(request))
        await users_service.register(session, settings, mailer, body.email, body.password)
    except AppError as error:
        where = "email" if error.code == "EmailAlreadyRegistered" else "form"
        errors = {where: words_for(error.code)}
        return render(request, "register.html", context | {"errors": errors}, status_code=error.status_code)
    return redirect("/login?notice=registered")


@router.get("/verify-email")
async def verify_email(
    request: Request, session: SessionDep, settings: SettingsDep, token: Annotated[str, Query(max_length=4096)] = ""
) -> Response:
    """The link in the confirmation mail opens this page (the JSON API keeps GET /api/v1/auth/verify-email)."""
    try:
        await users_service.verify_email(session, settings, token)
    except AppError as error:
        return render(request, "verified.html", {"ok": False, "message": words_for(error.code)}, status_code=400)
    return render(request, "verified.html", {"ok": True})


@router.get("/forgot-password")
async def forgot_page(request: Request) -> Response:
    """The form that asks for a reset link."""
    return render(request, "forgot.html", {"email": ""})


@router.post("/forgot-password")
async def forgot_password(
    request: Request, form: CheckedForm, session: SessionDep, settings: SettingsDep, mailer: MailerDep
) -> Response:
    """The same answer whether or not the address has an account (as POST /api/v1/auth/forgot-password)."""
    email = _text(form, "email", 400)
    try:
        body = EmailRequest(email=email)
    except ValidationError as error:
        errors = field_errors(error, EMAIL)
        return render(request, "forgot.html", {"email": email, "errors": errors}, status_code=400)
    try:
        await enforce(request, settings.rate_limit_account_email_ip, "forgot-ip", request_ip(request))
        await enforce(request, settings.rate_limit_account_email, "forgot-account", body.email.lower())
    except AppError as error:
        errors = {"form": words_for(error.code)}
        return render(request, "forgot.html", {"email": email, "errors": errors}, status_code=error.status_code)
    await passwords.forgot_password(session, settings, mailer, body.email)
    return redirect("/login?notice=reset-sent")


@router.get("/reset-password")
async def reset_page(request: Request, token: Annotated[str, Query(max_length=4096)] = "") -> Response:
    """The link in the reset mail opens this page."""
    return render(request, "reset.html", {"token": token})


@router.post("/reset-password")
async def reset_password(request: Request, form: CheckedForm, session: SessionDep, settings: SettingsDep) -> Response:
    """Set the new password with the mailed token; every session of the account ends."""
    token = _text(form, "token", 4096)
    try:
        body = ResetPasswordRequest(token=token, new_password=_text(form, "new_password", 1100))
    except ValidationError as error:
        errors = field_errors(error, {"new_password": "The new password", "token": "The reset link"})
        return render(request, "reset.html", {"token": token, "errors": errors}, status_code=400)
    try:
        await passwords.reset_password(session, settings, body.token, body.new_password)
    except AppError as error:
        errors = {"form": words_for(error.code)}
        return render(request, "reset.html", {"token": "", "errors": errors}, status_code=error.status_code)
    await commit(session)
    response = redirect("/login?notice=reset-done")
    clear_session_cookie(request, response)
    return response
