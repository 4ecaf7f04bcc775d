"""The address book's pages: the list (search as you type, label and favourite filters, sorting, endless paging
by cursor), a contact's page, the create and edit form, the trash and upcoming birthdays. Every read and write goes
through the contacts feature's services, with the API's per-user budgets, cache and If-Match rule."""

from __future__ import annotations

import json
from typing import Annotated, Any, get_args
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from app.contacts import labels, service, trash
from app.contacts.queries import Sort
from app.core.config import Settings, SettingsDep
from app.core.db import SessionDep, read_session
from app.core.errors import AppError
from app.core.rate_limit import enforce
from app.core.schemas import MAX_ID
from app.web import contact_forms
from app.web.contact_forms import ContactForm
from app.web.rendering import redirect, render, words_for
from app.web.security import CheckedForm, PageViewer, Viewer

PAGE_SIZE = 25
BIRTHDAY_DAYS = 30
SORTS: dict[str, str] = {
    "name": "Name (A to Z)",
    "-name": "Name (Z to A)",
    "created": "Oldest first",
    "-updated": "Recently changed",
}


async def budgeted_viewer(request: Request, viewer: PageViewer) -> Viewer:
    """The viewer, within the same per-user read and write budgets as the API's contact routes."""
    settings: Settings = request.app.state.settings
    if request.method == "GET":
        await enforce(request, settings.rate_limit_contacts_read, "contacts-read", str(viewer.user.id))
    else:
        await enforce(request, settings.rate_limit_contacts_write, "contacts-write", str(viewer.user.id))
    return viewer


Reader = Annotated[Viewer, Depends(budgeted_viewer)]
ContactId = Annotated[int, Path(ge=1, le=MAX_ID)]
router = APIRouter(include_in_schema=False)


def initials(contact: dict[str, Any]) -> str:
    parts = [str(contact.get("first_name") or ""), str(contact.get("last_name") or "")]
    letters = "".join(part.strip()[:1] for part in parts if part.strip())
    return letters.upper() or "?"


def display_name(contact: dict[str, Any]) -> str:
    return " ".join(str(contact.get(n)) for n in ("first_name", "last_name") if contact.get(n)) or "(no name)"


def _context(**values: Any) -> dict[str, Any]:
    return {"initials": initials, "display_name": display_name} | values


@router.get("/contacts")
async def contact_list(
    request: Request,
    viewer: Reader,
    session: SessionDep,
    settings: SettingsDep,
    q: Annotated[str, Query(max_length=100)] = "",
    label: Annotated[str, Query(max_length=100)] = "",
    favorite: Annotated[str, Query(max_length=5)] = "",
    sort: Annotated[str, Query(max_length=10)] = "name",
    cursor: Annotated[str, Query(max_length=2048)] = "",
) -> Response:
    """Your contacts, a page at a time; htmx swaps the results while you type and appends the next page as you
    scroll, and without JavaScript the form and the "More contacts" link do the same."""
    order: Sort = sort if sort in get_args(Sort) else "name"  # type: ignore[assignment]
    query = {"q": q.strip(), "label": label, "favorite": "1" if favorite else "", "sort": order}
    try:
        raw = await service.get_contacts_json(
            session,
            viewer.user.id,
            0,
            PAGE_SIZE,
            query["q"] or None,
            sort=order,
            label=label or None,
            favorite=True if favorite else None,
            cursor=cursor or None,
            secret=settings.jwt_key,
        )
    except AppError as error:
        context = {"heading": "This list cannot be shown", "message": words_for(error.code, error.detail)}
        return render(request, "error.html", context | {"back": "/contacts"}, viewer=viewer, status_code=400)
    page = json.loads(raw)
    async with read_session(request) as reader:
        known_labels = json.loads(await labels.get_labels_json(reader, viewer.user.id))["labels"]
    more = None
    if page.get("next_cursor"):
        more = "/contacts?" + "&".join(
            f"{k}={_quote(v)}" for k, v in (query | {"cursor": page["next_cursor"]}).items() if v
        )
    context = _context(page=page, query=query, labels=known_labels, sorts=SORTS, more=more, continued=bool(cursor))
    return render(request, "contacts.html", context, viewer=viewer)


def _quote(value: str) -> str:
    return quote(str(value), safe="")


async def _contact(request: Request, viewer: Viewer, contact_id: int) -> dict[str, Any] | None:
    async with read_session(request) as session:
        found = await service.get_contact_entity(session, contact_id, viewer.user.id)
    return json.loads(found[0]) if found else None


def _not_found(request: Request, viewer: Viewer) -> Response:
    context = {"heading": "Contact not found", "message": words_for("ContactNotFound"), "back": "/contacts"}
    return render(request, "error.html", context, viewer=viewer, status_code=404)


@router.get("/contacts/new")
async def new_contact(request: Request, viewer: Reader) -> Response:
    """An empty contact form."""
    form = contact_forms.with_blank_rows(ContactForm(values={"favorite": False}))
    return _form_page(request, viewer, form, None)


def _form_page(
    request: Request, viewer: Viewer, form: ContactForm, contact_id: int | None, status_code: int = 200
) -> Response:
    context = {"form": form, "contact_id": contact_id, "errors": form.errors, "stale": False}
    context["stale"] = "stale" in form.errors
    return render(request, "contact_form.html", context, viewer=viewer, status_code=status_code)


def _region(settings: Settings) -> str | None:
    return settings.default_phone_region


@router.post("/contacts/new")
async def create_contact(
    request: Request, viewer: Reader, posted: CheckedForm, session: SessionDep, settings: SettingsDep
) -> Response:
    """Add the contact (or, for "add another", show the form again with one more blank row)."""
    form, kept = contact_forms.read_form(posted)
    more = posted.get("more")
    if isinstance(more, str) and more in contact_forms.GROUPS:
        return _form_page(request, viewer, contact_forms.with_blank_rows(form, more), None)
    body = contact_forms.to_create(form, kept)
    if body is None:
        return _form_page(request, viewer, contact_forms.with_blank_rows(form), None, 400)
    try:
        created = await service.create_contact(session, viewer.user.id, body, fallback_region=_region(settings))
    except AppError as error:
        form.errors = _write_error(error)
        return _form_page(request, viewer, contact_forms.with_blank_rows(form), None, error.status_code)
    return redirect(f"/contacts/{created['id']}?notice=saved")


def _write_error(error: AppError) -> dict[str, str]:
    if error.code == "ContactEmailExists":
        return {"emails": "Another of your contacts already has one of these email addresses."}
    if error.code == "PreconditionFailed":
        return {"stale": words_for(error.code), "form": words_for(error.code)}
    return {"form": words_for(error.code, error.detail)}


@router.get("/contacts/{contact_id}")
async def contact_page(request: Request, viewer: Reader, contact_id: ContactId) -> Response:
    """One of your contacts."""
    contact = await _contact(request, viewer, contact_id)
    if contact is None:
        return _not_found(request, viewer)
    return render(request, "contact.html", _context(contact=contact), viewer=viewer)


@router.get("/contacts/{contact_id}/edit")
async def edit_contact(request: Request, viewer: Reader, contact_id: ContactId) -> Response:
    """The form of one of your contacts, carrying the ETag of the version shown."""
    contact = await _contact(request, viewer, contact_id)
    if contact is None:
        return _not_found(request, viewer)
    return _form_page(request, viewer, contact_forms.from_contact(contact), contact_id)


@router.post("/contacts/{contact_id}/edit")
async def update_contact(
    request: Request,
    viewer: Reader,
    posted: CheckedForm,
    session: SessionDep,
    settings: SettingsDep,
    contact_id: ContactId,
) -> Response:
    """Saves only the version the form was opened on (its ETag rides in a hidden field as If-Match): a contact
    changed elsewhere meanwhile is not overwritten; the page says so and offers to reload."""
    form, kept = contact_forms.read_form(posted)
    more = posted.get("more")
    if isinstance(more, str) and more in contact_forms.GROUPS:
        return _form_page(request, viewer, contact_forms.with_blank_rows(form, more), contact_id)
    body = contact_forms.to_update(form, kept)
    if body is None:
        return _form_page(request, viewer, contact_forms.with_blank_rows(form), contact_id, 400)
    try:
        await service.update_contact(
            session,
            contact_id,
            viewer.user.id,
            body,
            partial=True,
            if_match=form.etag or None,
            fallback_region=_region(settings),
        )
    except AppError as error:
        if error.code == "ContactNotFound":
            return _not_found(request, viewer)
        form.errors = _write_error(error)
        return _form_page(request, viewer, contact_forms.with_blank_rows(form), contact_id, error.status_code)
    return redirect(f"/contacts/{contact_id}?notice=saved")


@router.post("/contacts/{contact_id}/delete")
async def delete_contact(
    request: Request, viewer: Reader, posted: CheckedForm, session: SessionDep, contact_id: ContactId
) -> Response:
    """Move the contact to the trash (only the version shown, by its ETag)."""
    etag = posted.get("etag")
    try:
        await service.delete_contact(
            session, contact_id, viewer.user.id, if_match=etag if isinstance(etag, str) and etag else None
        )
    except AppError as error:
        if error.code == "ContactNotFound":
            return _not_found(request, viewer)
        context = {"heading": "Not deleted", "message": words_for(error.code), "back": f"/contacts/{contact_id}"}
        return render(request, "error.html", context, viewer=viewer, status_code=error.status_code)
    return redirect("/contacts?notice=deleted")


@router.get("/trash")
async def trash_page(
    request: Request,
    viewer: Reader,
    session: SessionDep,
    settings: SettingsDep,
    cursor: Annotated[str, Query(max_length=2048)] = "",
) -> Response:
    """Your trash, most recently deleted first."""
    try:
        raw = await trash.get_trash_json(session, settings, viewer.user.id, 0, PAGE_SIZE, cursor or None)
    except AppError as error:
        context = {"heading": "The trash cannot be shown", "message": words_for(error.code, error.detail)}
        return render(request, "error.html", context | {"back": "/trash"}, viewer=viewer, status_code=400)
    page = json.loads(raw)
    more = f"/trash?cursor={_quote(page['next_cursor'])}" if page.get("next_cursor") else None
    return render(request, "trash.html", _context(page=page, more=more), viewer=viewer)


@router.post("/trash/{contact_id}/restore")
async def restore_contact(
    request: Request, viewer: Reader, posted: CheckedForm, session: SessionDep, contact_id: ContactId
) -> Response:
    """Bring a contact back from the trash, whole."""
    try:
        restored = await trash.restore_contact(session, contact_id, viewer.user.id)
    except AppError:
        return _not_found(request, viewer)
    return redirect(f"/contacts/{restored['id']}?notice=restored")


@router.get("/birthdays")
async def birthdays_page(request: Request, viewer: Reader, session: SessionDep) -> Response:
    """Birthdays in the next 30 days, soonest first."""
    raw = await service.get_birthdays_json(session, viewer.user.id, BIRTHDAY_DAYS, 0, 100)
    page = json.loads(raw)
    return render(request, "birthdays.html", _context(page=page, days=BIRTHDAY_DAYS), viewer=viewer)
