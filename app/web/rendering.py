"""Rendering the pages: the Jinja2 environment, what every page is given (viewer, anti-forgery token, notices), and
errors in words a person understands, attached to the field they are about."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from app.web.security import Viewer, form_token, set_visitor_cookie

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")

# Notices shown after a redirect: named by key so that no text from the address is ever put on a page.
NOTICES = {
    "registered": "Account created. We sent you an email: open the link in it to confirm your address, then log in.",
    "verified": "Your email address is confirmed. You can log in now.",
    "reset-sent": "If the address belongs to an account, we sent it a link to choose a new password. "
    "It works for a limited time.",
    "reset-done": "Your password has been changed. Log in with the new one.",
    "logged-out": "You have logged out.",
    "session-ended": "Your session has ended. Please log in again.",
    "saved": "Saved.",
    "deleted": "The contact was moved to the trash.",
    "restored": "The contact was restored.",
    "password-changed": "Your password has been changed. Other sessions have been logged out.",
    "settings-saved": "Your settings have been saved.",
    "user-updated": "The account has been updated.",
}

# What an error looks like to a person, by the service's error code.
MESSAGES = {
    "InvalidCredentials": "That email and password do not match an account.",
    "EmailNotVerified": "Confirm your email address first: open the link we sent you.",
    "InactiveAccount": "This account has been deactivated.",
    "EmailAlreadyRegistered": "An account with this email already exists. Log in or reset your password.",
    "InvalidResetToken": "This reset link is invalid, expired or already used. Ask for a new one below.",
    "InvalidVerificationToken": "This confirmation link is invalid or expired.",
    "WrongCurrentPassword": "Your current password is not correct.",
    "RateLimited": "Too many attempts. Please wait a minute and try again.",
    "ContactNotFound": "This contact does not exist (or no longer exists).",
    "PreconditionFailed": "This contact was changed elsewhere after you opened it. Reload to see the latest "
    "version, then make your change again.",
    "CannotChangeOwnAccount": "You cannot change your own role or active flag.",
}

FIELD_WORDS = {
    "string_too_short": "is too short",
    "string_too_long": "is too long",
    "missing": "is required",
    "value_error": "is not valid",
}


def words_for(code: str, fallback: str | None = None) -> str:
    return MESSAGES.get(code, fallback or "Something went wrong. Please try again.")


def field_errors(error: ValidationError, labels: dict[str, str] | None = None) -> dict[str, str]:
    """A message per form field from a schema's validation error (`labels` name the fields as the page does)."""
    found: dict[str, str] = {}
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        field = ".".join(location) or "form"
        if field in found:
            continue
        kind = item["type"]
        context = item.get("ctx") or {}
        label = (labels or {}).get(location[0] if location else "", "This field")
        if kind == "string_too_short" and "min_length" in context:
            found[field] = f"{label} must be at least {context['min_length']} characters long."
        elif kind == "string_too_long" and "max_length" in context:
            found[field] = f"{label} must be at most {context['max_length']} characters long."
        elif "email" in str(item.get("msg", "")).lower() or (kind == "value_error" and "@" in str(item.get("msg"))):
            found[field] = f"{label} must be an email address like name@example.com."
        elif kind == "missing":
            found[field] = f"{label} is required."
        else:
            message = str(item.get("msg", "")).removeprefix("Value error, ")
            found[field] = f"{label}: {message[:1].lower()}{message[1:]}." if message else f"{label} is not valid."
    return found


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    viewer: Viewer | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    values: dict[str, Any] = {
        "viewer": viewer,
        "csrf": viewer.csrf if viewer is not None else form_token(request),
        "notice": NOTICES.get(request.query_params.get("notice", "")),
        "errors": {},
    }
    values.update(context or {})
    response = TEMPLATES.TemplateResponse(request, template, values, status_code=status_code)
    set_visitor_cookie(request, response)
    return response


def redirect(url: str) -> RedirectResponse:
    """After a successful post: 303, so that a reload does not post again."""
    return RedirectResponse(url, status_code=303)
