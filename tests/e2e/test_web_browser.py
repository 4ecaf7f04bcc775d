"""The web app in a real Chromium (Debian's, through Playwright): a person's whole journey from sign-up to a
password reset by mail, an administrator's demotion closing another's open page, axe-core on every page at desktop
and phone widths, and every page's main task once more with JavaScript off."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import DESKTOP, PASSWORD, PHONE, README_SCREENSHOTS, WebServer

pytestmark = pytest.mark.usefixtures("web_server")
_numbers = itertools.count(1)
SERIOUS = ("moderate", "serious", "critical")


def fresh_email(stem: str) -> str:
    return f"{stem}{next(_numbers)}-{id(object())}@example.com"


@pytest.fixture
def page(browser: Any, web_server: WebServer) -> Iterator[Any]:
    context = browser.new_context(base_url=web_server.base_url, viewport=DESKTOP)
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def register_and_verify(page: Any, server: WebServer, email: str, password: str = PASSWORD) -> None:
    page.goto("/register")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("status")).to_contain_text("Account created")
    (message,) = server.mails_to(email)
    page.goto(server.link_in(message))
    expect(page.get_by_role("heading", level=1)).to_have_text("Your email address is confirmed")


def log_in(page: Any, email: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Contacts")


def add_contact(page: Any, first: str, last: str, phones: list[str], **extra: str) -> None:
    page.goto("/contacts/new")
    page.get_by_label("First name").fill(first)
    page.get_by_label("Last name").fill(last)
    for index, number in enumerate(phones, start=1):
        if page.get_by_label(f"Phone {index}", exact=True).count() == 0:
            page.get_by_role("button", name="Add another phone").click()
        page.get_by_label(f"Phone {index}", exact=True).fill(number)
    for label, value in extra.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Save contact").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"{first} {last}")


def api_token(server: WebServer, email: str, password: str = PASSWORD) -> dict[str, str]:
    response = httpx.post(f"{server.base_url}/api/v1/auth/login", data={"username": email, "password": password})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_a_persons_journey_from_sign_up_to_password_reset(page, web_server, screenshot):
    email = fresh_email("ada")
    register_and_verify(page, web_server, email)
    log_in(page, email)
    soon = (date.today() + timedelta(days=5)).replace(year=1992).isoformat()
    add_contact(page, "Charles", "Babbage", ["+44 20 7946 0001", "+44 7700 900001", "+44 20 7946 0002"])
    add_contact(page, "Ada", "Lovelace", ["+44 20 7946 0003", "+44 7700 900003"], Birthday=soon)
    add_contact(page, "Grace", "Hopper", ["+1 202 555 0143", "+1 202 555 0199"], Labels="navy, science")
    expect(page.get_by_text("+1 202 555 0199")).to_be_visible()

    # Search as you type: the list narrows without a page load.
    page.goto("/contacts")
    expect(page.locator("#items > li")).to_have_count(3)
    page.get_by_label("Search").fill("babb")
    expect(page.locator("#items > li")).to_have_count(1)
    expect(page.locator("#items")).to_contain_text("Charles Babbage")
    page.get_by_label("Search").fill("")
    expect(page.locator("#items > li")).to_have_count(3)
    page.screenshot(path=str(README_SCREENSHOTS / "contacts-list.png"))
    screenshot(page, "list")

    # Edit with If-Match: the contact changes elsewhere (the API) while the form is open.
    page.get_by_role("link", name="Ada Lovelace").click()
    contact_id = int(re.search(r"/contacts/(\d+)", page.url).group(1))
    page.get_by_role("link", name="Edit").click()
    page.screenshot(path=str(README_SCREENSHOTS / "contact-edit.png"), full_page=True)
    changed = httpx.patch(
        f"{web_server.base_url}/api/v1/contacts/{contact_id}",
        json={"nickname": "Enchantress of Numbers"},
        headers=api_token(web_server, email),
    )
    assert changed.status_code == 200, changed.text
    page.get_by_label("Last name").fill("King")
    page.get_by_role("button", name="Save contact").click()
    expect(page.locator("#stale")).to_contain_text("Changed elsewhere")
    screenshot(page, "changed-elsewhere")
    page.get_by_role("link", name="reload the latest version").click()
    expect(page.get_by_label("Nickname")).to_have_value("Enchantress of Numbers")
    page.get_by_label("Last name").fill("King")
    page.get_by_role("button", name="Save contact").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Ada King")

    # Delete to the trash, then restore.
    page.get_by_role("button", name="Move Ada King to the trash").click()
    expect(page.get_by_role("status")).to_contain_text("moved to the trash")
    expect(page.locator("#items")).not_to_contain_text("Ada King")
    page.get_by_role("link", name="Trash").click()
    page.get_by_role("button", name="Restore Ada King").click()
    expect(page.get_by_role("status")).to_contain_text("restored")

    # Upcoming birthdays.
    page.get_by_role("link", name="Birthdays").click()
    expect(page.get_by_role("main")).to_contain_text("Ada King")
    expect(page.get_by_role("main")).not_to_contain_text("Grace Hopper")

    # Log out, then forget the password and reset it from the mail.
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status")).to_contain_text("You have logged out")
    page.goto("/contacts")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("status")).to_contain_text("we sent it a link")
    (message,) = [m for m in web_server.mails_to(email, count=2) if "Reset" in str(m["Subject"])]
    page.goto(web_server.link_in(message))
    page.get_by_label("New password").fill("a new end to end passphrase")
    page.get_by_role("button", name="Set the new password").click()
    expect(page.get_by_role("status")).to_contain_text("Your password has been changed")
    log_in(page, email, "a new end to end passphrase")
    screenshot(page, "after-reset")


def test_an_administrators_demotion_closes_the_demoted_admins_open_page(browser, web_server, screenshot):
    boss, deputy = fresh_email("boss"), fresh_email("deputy")
    web_server.create_admin(boss)
    web_server.create_admin(deputy)
    contexts = [browser.new_context(base_url=web_server.base_url, viewport=DESKTOP) for _ in range(2)]
    try:
        admin_page, deputy_page = (context.new_page() for context in contexts)
        log_in(deputy_page, deputy)
        deputy_page.goto("/admin/users")
        expect(deputy_page.get_by_role("heading", level=1)).to_have_text("Users")
        log_in(admin_page, boss)
        admin_page.goto("/admin/users")
        admin_page.get_by_label(f"Role of {deputy}").select_option("user")
        admin_page.get_by_role("button", name=f"Save {deputy}").click()
        expect(admin_page.get_by_role("status")).to_contain_text("The account has been updated")
        # The deputy's open page: the next thing it does finds the session over.
        deputy_page.get_by_role("link", name="Users").click()
        expect(deputy_page).to_have_url(re.compile(r"/login\?next=%2Fadmin%2Fusers"))
        expect(deputy_page.get_by_role("heading", level=1)).to_have_text("Log in")
        screenshot(deputy_page, "demoted")
        log_in(deputy_page, deputy)
        deputy_page.goto("/admin/users")
        expect(deputy_page.get_by_role("heading", level=1)).to_have_text("Administrators only")
    finally:
        for context in contexts:
            context.close()


def _pages_of(server: WebServer, browser: Any) -> tuple[str, list[str]]:
    """An administrator with one contact in the book and one in the trash; every page's path."""
    email = fresh_email("axe")
    server.create_admin(email)
    headers = api_token(server, email)
    created = httpx.post(
        f"{server.base_url}/api/v1/contacts",
        json={
            "first_name": "Alan",
            "last_name": "Turing",
            "phones": [{"value": "+44 20 7946 0100"}],
            "birthday": (date.today() + timedelta(days=3)).replace(year=1992).isoformat(),
        },
        headers=headers,
    ).json()
    trashed = httpx.post(f"{server.base_url}/api/v1/contacts", json={"first_name": "Gone"}, headers=headers).json()
    httpx.delete(f"{server.base_url}/api/v1/contacts/{trashed['id']}", headers=headers).raise_for_status()
    signed_in = [
        "/contacts",
        f"/contacts/{created['id']}",
        "/contacts/new",
        f"/contacts/{created['id']}/edit",
        "/birthdays",
        "/trash",
        "/settings",
        "/admin/users",
    ]
    return email, signed_in


ANONYMOUS = ["/login", "/register", "/forgot-password", "/reset-password?token=x", "/verify-email?token=bad"]


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone-375"])
def test_every_page_passes_axe_at_desktop_and_phone_widths(browser, web_server, screenshot, viewport):
    email, signed_in = _pages_of(web_server, browser)
    context = browser.new_context(base_url=web_server.base_url, viewport=viewport)
    try:
        page = context.new_page()
        found: dict[str, list[str]] = {}
        for path in ANONYMOUS:
            found[path] = _axe(page, path)
        log_in(page, email)
        for path in signed_in:
            found[path] = _axe(page, path)
            if viewport == PHONE:
                # Usable on a 375 px phone: nothing wider than the screen.
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= viewport["width"], f"{path} is {width} px wide at {viewport['width']} px"
        screenshot(page, "last-page")
    finally:
        context.close()
    assert {path: v for path, v in found.items() if v} == {}
    assert len(found) == len(ANONYMOUS) + len(signed_in)


def _axe(page: Any, path: str) -> list[str]:
    page.goto(path)
    # Loaded from the site itself: the pages' CSP allows scripts of this origin only.
    page.add_script_tag(url="/static/vendor/axe.min.js")
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v.get("impact") in SERIOUS
    ]


def test_every_pages_main_task_works_with_javascript_off(browser, web_server, screenshot):
    context = browser.new_context(base_url=web_server.base_url, viewport=PHONE, java_script_enabled=False)
    try:
        page = context.new_page()
        email = fresh_email("nojs")
        register_and_verify(page, web_server, email)
        log_in(page, email)
        add_contact(page, "Katherine", "Johnson", ["+1 757 555 0100", "+1 757 555 0101", "+1 757 555 0102"])
        add_contact(page, "Dorothy", "Vaughan", ["+1 757 555 0200"], Labels="nasa")
        # Search and filters by submitting the form.
        page.goto("/contacts")
        page.get_by_label("Search").fill("kath")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#items > li")).to_have_count(1)
        page.goto("/contacts")
        page.get_by_label("Label").select_option("nasa")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#items")).to_contain_text("Dorothy Vaughan")
        expect(page.locator("#items")).not_to_contain_text("Katherine")
        # Edit: remove a phone and save.
        page.get_by_role("link", name="Dorothy Vaughan").click()
        page.get_by_role("link", name="Edit").click()
        page.get_by_label("Organisation").fill("NACA")
        page.get_by_role("button", name="Save contact").click()
        expect(page.get_by_role("main")).to_contain_text("NACA")
        # Delete and restore.
        page.get_by_role("button", name="Move Dorothy Vaughan to the trash").click()
        page.goto("/trash")
        page.get_by_role("button", name="Restore Dorothy Vaughan").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("Dorothy Vaughan")
        page.goto("/birthdays")
        expect(page.get_by_role("heading", level=1)).to_contain_text("Birthdays")
        # Settings: the default region, then the password.
        page.goto("/settings")
        page.get_by_label("Region for phone numbers").select_option("US")
        page.get_by_role("button", name="Save region").click()
        expect(page.get_by_role("status")).to_contain_text("saved")
        page.get_by_label("Current password").fill(PASSWORD)
        page.get_by_label("New password").fill("no script passphrase")
        page.get_by_role("button", name="Change password").click()
        expect(page.get_by_role("status")).to_contain_text("Your password has been changed")
        screenshot(page)
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("status")).to_contain_text("You have logged out")
        # Forgotten password, reset from the mail.
        page.goto("/forgot-password")
        page.get_by_label("Email").fill(email)
        page.get_by_role("button", name="Send the link").click()
        (message,) = [m for m in web_server.mails_to(email, count=2) if "Reset" in str(m["Subject"])]
        page.goto(web_server.link_in(message))
        page.get_by_label("New password").fill("reset without script")
        page.get_by_role("button", name="Set the new password").click()
        expect(page.get_by_role("status")).to_contain_text("Your password has been changed")
        # An administrator deactivates the account on the users page.
        admin = fresh_email("nojs-admin")
        web_server.create_admin(admin)
        log_in(page, admin)
        page.goto("/admin/users")
        page.get_by_role("row", name=re.compile(re.escape(email))).get_by_label("Active").uncheck()
        page.get_by_role("button", name=f"Save {email}").click()
        expect(page.get_by_role("status")).to_contain_text("The account has been updated")
        page.get_by_role("button", name="Log out").click()
        page.goto("/login")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill("reset without script")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_contain_text("This account has been deactivated.")
    finally:
        context.close()
