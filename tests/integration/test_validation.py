"""Bad input of every kind gets a 4xx with a clear `{"error", "detail"}` body, never a 500, and changes nothing.

These requests go through a client that turns an unhandled exception into the 500 response a real server would
send (instead of re-raising it into the test), so a crash reads as a status code.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select

from app.contacts.models import Contact
from app.users.models import User
from tests.factories import DEFAULT_PASSWORD, auth_headers, make_contact, make_user

API = "/api/v1"
MB = 1_000_000
# Valid values with a "|" where a NUL or a lone surrogate goes.
VALID_BUT_FOR_MARK = {
    "first_name": "Ad|a",
    "last_name": "Love|lace",
    "email": "ada|@example.com",
    "phone": "555|1234",
    "notes": "note|",
}


@pytest.fixture
async def http(clean, app):
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings)


@pytest.fixture
def headers(settings, owner):
    return auth_headers(settings, owner)


@pytest.fixture
async def contact(db, owner):
    return await make_contact(db, owner, first_name="Stable", last_name="Row", email="stable@example.com")


def refusal_problem(response, status: int | tuple[int, ...] = 422, field: str | None = None) -> str | None:
    """What is wrong with `response` as a refusal: not a `status` 4xx, not the service's error body, or (for a
    422 about one field) not naming `field`. None when it is a proper refusal."""
    statuses = status if isinstance(status, tuple) else (status,)
    if response.status_code not in statuses:
        return f"{response.status_code}: {response.text[:300]}"
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:300]}"
    if not isinstance(body, dict) or set(body) != {"error", "detail"} or not body["detail"]:
        return f"not an error body: {body}"
    if response.status_code == 422:
        if body["error"] != "ValidationError":
            return f"error is {body['error']}"
        if field is not None and not any(field in err["loc"] for err in body["detail"]):
            return f"no error about {field}: {body['detail']}"
    return None


def assert_refused(response, status: int | tuple[int, ...] = 422, field: str | None = None) -> None:
    problem = refusal_problem(response, status, field)
    assert problem is None, problem


async def refusals_by_write_routes(
    http, headers, contact_id: int, status, field, extra_headers: dict | None = None, **request
) -> dict[str, str]:
    """Send one bad request body to POST /contacts, PUT and PATCH /contacts/{id}; the improper answers."""
    problems = {}
    routes = (("POST", "/contacts"), ("PUT", f"/contacts/{contact_id}"), ("PATCH", f"/contacts/{contact_id}"))
    for method, url in routes:
        response = await http.request(method, API + url, headers=headers | (extra_headers or {}), **request)
        if (problem := refusal_problem(response, status, field)) is not None:
            problems[method] = problem
    return problems


async def contact_rows(db) -> list[dict]:
    table = Contact.__table__
    return [dict(row) for row in (await db.execute(select(table).order_by(table.c.id))).mappings()]


async def user_count(db) -> int:
    return int(await db.scalar(select(func.count()).select_from(User)) or 0)


def future_date() -> str:
    """Two days ahead, so that no time zone makes it today."""
    return (datetime.now(UTC).date() + timedelta(days=2)).isoformat()


# -- contact bodies (POST, PUT, PATCH) ---------------------------------------------------------------------

BAD_CONTACT_BODIES = [
    pytest.param({"first_name": "A", "shoe_size": "x"}, "shoe_size", id="unknown-field"),
    pytest.param({"first_name": "A", "id": 5}, "id", id="sets-id"),
    pytest.param({"first_name": "A", "user_id": 1}, "user_id", id="sets-user_id"),
    pytest.param({"first_name": "A", "created_at": "2020-01-01T00:00:00Z"}, "created_at", id="sets-created_at"),
    pytest.param({"first_name": 123}, "first_name", id="int-first_name"),
    pytest.param({"first_name": ["Ada"]}, "first_name", id="list-first_name"),
    pytest.param({"first_name": {"x": 1}}, "first_name", id="object-first_name"),
    pytest.param({"first_name": True}, "first_name", id="bool-first_name"),
    pytest.param({"first_name": ""}, "first_name", id="empty-first_name"),
    pytest.param({"first_name": "   "}, "first_name", id="blank-first_name"),
    pytest.param({"first_name": "A", "last_name": 1}, "last_name", id="int-last_name"),
    pytest.param({"first_name": "A", "email": 1}, "email", id="int-email"),
    pytest.param({"first_name": "A", "email": "not-an-email"}, "email", id="invalid-email"),
    pytest.param({"first_name": "A", "email": "a@@example.com"}, "email", id="double-at-email"),
    pytest.param({"first_name": "A", "email": "ada@example"}, "email", id="no-tld-email"),
    pytest.param({"first_name": "A", "phone": 5551234}, "phone", id="int-phone"),
    pytest.param({"first_name": "A", "phone": "call me"}, "phone", id="letters-phone"),
    pytest.param({"first_name": "A", "birthday": "not-a-date"}, "birthday", id="text-birthday"),
    pytest.param({"first_name": "A", "birthday": "2000-13-01"}, "birthday", id="month-13-birthday"),
    pytest.param({"first_name": "A", "birthday": "2001-02-29"}, "birthday", id="feb-29-common-year-birthday"),
    pytest.param({"first_name": "A", "birthday": future_date()}, "birthday", id="future-birthday"),
    pytest.param({"first_name": "A", "birthday": "9999-12-31"}, "birthday", id="far-future-birthday"),
    pytest.param({"first_name": "A", "birthday": "0001-01-01"}, "birthday", id="ancient-birthday"),
    pytest.param({"first_name": "A", "birthday": 10**30}, "birthday", id="huge-int-birthday"),
    pytest.param({"first_name": "A", "birthday": 1e308}, "birthday", id="huge-float-birthday"),
    pytest.param({"first_name": "A", "birthday": 4.3e-222}, "birthday", id="timestamp-float-birthday"),
    pytest.param({"first_name": "A", "birthday": 86400}, "birthday", id="timestamp-int-birthday"),
    pytest.param({"first_name": "A", "birthday": "946684800"}, "birthday", id="timestamp-string-birthday"),
    pytest.param({"first_name": "A", "birthday": "2000-01-01T00:00:00"}, "birthday", id="datetime-birthday"),
    pytest.param({"first_name": "\u0085"}, "first_name", id="next-line-only-first_name"),
    pytest.param({"first_name": "\x1c\x1f"}, "first_name", id="separators-only-first_name"),
    pytest.param({"first_name": "\ufeff"}, "first_name", id="bom-only-first_name"),
    pytest.param({"first_name": "A", "phone": "+3  "}, "phone", id="trailing-spaces-phone"),
    pytest.param({"first_name": "A", "phone": "\u00a05551234"}, "phone", id="leading-nbsp-phone"),
    pytest.param({"first_name": "A", "phone": "5"}, "phone", id="one-digit-phone"),
    pytest.param({"first_name": "A", "phone": "\u0665\u0665\u0665"}, "phone", id="arabic-digits-phone"),
    pytest.param({"first_name": "A", "notes": ["x"]}, "notes", id="list-notes"),
    pytest.param({"first_name": "x" * MB}, "first_name", id="1MB-first_name"),
    pytest.param({"first_name": "x" * 101}, "first_name", id="101-char-first_name"),
    pytest.param({"first_name": "A", "last_name": "x" * 101}, "last_name", id="101-char-last_name"),
    pytest.param({"first_name": "A", "notes": "x" * 2001}, "notes", id="2001-char-notes"),
    pytest.param({"first_name": "A", "notes": "x" * MB}, "notes", id="1MB-notes"),
    pytest.param({"first_name": "A", "phone": "1" * 51}, "phone", id="51-char-phone"),
    pytest.param({"first_name": "A", "email": "a" * 64 + "@" + "b" * MB + ".com"}, "email", id="1MB-email"),
    # Each value is valid once the NUL is taken out, so the NUL alone is what is refused.
    *[
        pytest.param({"first_name": "A", field: value.replace("|", "\u0000")}, field, id=f"nul-in-{field}")
        for field, value in VALID_BUT_FOR_MARK.items()
    ],
    pytest.param([], None, id="array-body"),
    pytest.param("Ada", None, id="string-body"),
    pytest.param(None, None, id="null-body"),
    pytest.param(42, None, id="number-body"),
]


@pytest.mark.parametrize(("body", "field"), BAD_CONTACT_BODIES)
async def test_contact_write_with_bad_body_returns_422(http, db, headers, contact, body, field):
    before = await contact_rows(db)

    problems = await refusals_by_write_routes(http, headers, contact.id, 422, field, json=body)

    assert problems == {}, problems
    assert await contact_rows(db) == before


# Raw bodies: lone surrogates as JSON escapes (what a browser or a buggy client can send), broken JSON,
# wrong content types.
RAW_CONTACT_BODIES = [
    *[
        pytest.param(
            json.dumps({"first_name": "A", field: value}).replace("|", "\\ud800").encode(),
            "application/json",
            field,
            id=f"surrogate-in-{field}",
        )
        for field, value in VALID_BUT_FOR_MARK.items()
    ],
    pytest.param(b'{"first_name": "A\\udfffB"}', "application/json", "first_name", id="low-surrogate-first_name"),
    pytest.param(b'{"first_name": "A", "\\ud800": "x"}', "application/json", None, id="surrogate-field-name"),
    pytest.param(b'{"first_name": "A", "birthday": NaN}', "application/json", "birthday", id="nan-birthday"),
    pytest.param(b'{"first_name": "Ada"', "application/json", None, id="truncated-json"),
    pytest.param(b'{"first_name": "Ada",}', "application/json", None, id="trailing-comma"),
    pytest.param(b"{'first_name': 'Ada'}", "application/json", None, id="single-quotes"),
    pytest.param(b"", "application/json", None, id="empty-body"),
    pytest.param(b"\xff\xfe\x00garbage", "application/json", None, id="binary-body"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "application/json", None, id="deeply-nested"),
    pytest.param(b'{"first_name": "Ada"}', "text/plain", None, id="text-plain"),
    pytest.param(b"first_name=Ada", "application/x-www-form-urlencoded", None, id="form-encoded"),
    pytest.param(b'<contact first_name="Ada"/>', "application/xml", None, id="xml"),
]


@pytest.mark.parametrize(("raw", "content_type", "field"), RAW_CONTACT_BODIES)
async def test_contact_write_with_bad_raw_body_returns_4xx(http, db, headers, contact, raw, content_type, field):
    before = await contact_rows(db)

    problems = await refusals_by_write_routes(
        http, headers, contact.id, (400, 415, 422), field, content=raw, extra_headers={"Content-Type": content_type}
    )

    assert problems == {}, problems
    assert await contact_rows(db) == before


async def test_create_contact_with_body_over_size_limit_returns_413(http, db, headers, settings):
    body = json.dumps({"first_name": "x" * (settings.max_request_bytes + 1)})

    response = await http.post(f"{API}/contacts", content=body, headers=headers | {"Content-Type": "application/json"})

    assert_refused(response, 413)
    assert response.json()["error"] == "PayloadTooLarge"
    assert await contact_rows(db) == []


async def test_create_contact_with_valid_unicode_and_emoji_returns_201(http, db, headers):
    response = await http.post(
        f"{API}/contacts",
        content=b'{"first_name": "Zo\\u00eb \\ud83d\\ude00", "notes": "\\u6f22\\u5b57"}',
        headers=headers | {"Content-Type": "application/json"},
    )

    assert response.status_code == 201, response.text
    assert response.json()["first_name"] == "Zoë 😀"
    [row] = await contact_rows(db)
    assert (row["first_name"], row["notes"]) == ("Zoë 😀", "漢字")


async def test_create_contact_with_max_length_dotted_i_names_returns_201(http, db, headers):
    # "İ" lower-cases to two characters: names at their maximum length must still be storable.
    body = {"first_name": "İ" * 100, "last_name": "İ" * 100, "email": "a" * 64 + "@" + "b" * 60 + ".example.com"}

    response = await http.post(f"{API}/contacts", json=body, headers=headers)

    assert response.status_code == 201, f"{response.status_code}: {response.text[:300]}"
    [row] = await contact_rows(db)
    assert (row["first_name"], row["last_name"]) == (body["first_name"], body["last_name"])


async def test_contact_fields_are_stored_without_surrounding_whitespace(http, db, headers):
    body = {"first_name": "\u3000 Ada\t", "last_name": " Lovelace \u2028", "phone": " (030) 1234-56 x7\t"}

    response = await http.post(f"{API}/contacts", json=body, headers=headers)

    assert response.status_code == 201, response.text
    [row] = await contact_rows(db)
    assert (row["first_name"], row["last_name"], row["phone"]) == ("Ada", "Lovelace", "(030) 1234-56 x7")


async def test_patch_first_name_null_is_refused_and_absent_from_the_schema(http, db, headers, contact):
    before = await contact_rows(db)

    response = await http.patch(f"{API}/contacts/{contact.id}", json={"first_name": None}, headers=headers)

    assert refusal_problem(response, 422, "first_name") is None, response.text
    assert await contact_rows(db) == before
    schema = (await http.get("/openapi.json")).json()
    assert schema["components"]["schemas"]["ContactUpdate"]["properties"]["first_name"]["type"] == "string"


async def test_every_operation_with_a_body_documents_400_and_413(http):
    schema = (await http.get("/openapi.json")).json()
    with_body = {
        f"{method.upper()} {path}": sorted(operation["responses"])
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    }

    assert len(with_body) >= 12, with_body
    assert {op: codes for op, codes in with_body.items() if not {"400", "413"} <= set(codes)} == {}


# -- contact ids in the path -------------------------------------------------------------------------------

BAD_IDS = [
    pytest.param("99999999999999999999", id="beyond-64-bits"),
    pytest.param(str(2**63), id="2**63"),
    pytest.param(str(2**64 + 1), id="2**64+1"),
    pytest.param("0", id="zero"),
    pytest.param("-1", id="negative"),
    pytest.param("-9223372036854775809", id="beyond-64-bits-negative"),
    pytest.param("1.5", id="fraction"),
    pytest.param("1e3", id="exponent"),
    pytest.param("abc", id="letters"),
    pytest.param("%00", id="nul"),
    pytest.param("%C2%B2", id="superscript-two"),
    pytest.param("%E2%91%A0", id="circled-one"),
    pytest.param("1" * 1000, id="1000-digits"),
]


@pytest.mark.parametrize("contact_id", BAD_IDS)
async def test_contact_route_with_bad_id_returns_422(http, db, headers, contact, contact_id):
    before = await contact_rows(db)
    problems = {}

    for method in ("GET", "PUT", "PATCH", "DELETE"):
        body = {"first_name": "Changed"} if method in ("PUT", "PATCH") else None
        response = await http.request(method, f"{API}/contacts/{contact_id}", json=body, headers=headers)
        if (problem := refusal_problem(response, 422, "contact_id")) is not None:
            problems[method] = problem

    assert problems == {}, problems
    assert await contact_rows(db) == before


# -- query parameters --------------------------------------------------------------------------------------

BAD_LIST_PARAMS = [
    pytest.param({"limit": 101}, "limit", id="limit-101"),
    pytest.param({"limit": 10**6}, "limit", id="limit-1e6"),
    pytest.param({"limit": 0}, "limit", id="limit-0"),
    pytest.param({"limit": -1}, "limit", id="limit-negative"),
    pytest.param({"limit": "ten"}, "limit", id="limit-text"),
    pytest.param({"limit": "99999999999999999999"}, "limit", id="limit-beyond-64-bits"),
    pytest.param({"skip": -1}, "skip", id="skip-negative"),
    pytest.param({"skip": "99999999999999999999"}, "skip", id="skip-beyond-64-bits"),
    pytest.param({"skip": 10**12}, "skip", id="skip-1e12"),
    pytest.param({"skip": "1.5"}, "skip", id="skip-fraction"),
    pytest.param({"q": "a\u0000b"}, "q", id="nul-in-q"),
    pytest.param({"q": "\u0000"}, "q", id="only-nul-q"),
    pytest.param({"q": "x" * 101}, "q", id="101-char-q"),
    pytest.param({"q": "x" * 60_000}, "q", id="huge-q"),
]


@pytest.mark.parametrize(("params", "field"), BAD_LIST_PARAMS)
async def test_list_contacts_with_bad_query_returns_422(http, headers, contact, params, field):
    response = await http.get(f"{API}/contacts", params=params, headers=headers)

    assert_refused(response, 422, field)


BAD_BIRTHDAY_PARAMS = [
    pytest.param({"days": 366}, "days", id="days-366"),
    pytest.param({"days": -1}, "days", id="days-negative"),
    pytest.param({"days": 10**20}, "days", id="days-beyond-64-bits"),
    pytest.param({"days": "week"}, "days", id="days-text"),
    pytest.param({"days": "7.5"}, "days", id="days-fraction"),
    pytest.param({"limit": 101}, "limit", id="limit-101"),
    pytest.param({"limit": 10**6}, "limit", id="limit-1e6"),
    pytest.param({"skip": -1}, "skip", id="skip-negative"),
]


@pytest.mark.parametrize(("params", "field"), BAD_BIRTHDAY_PARAMS)
async def test_birthdays_with_bad_query_returns_422(http, headers, contact, params, field):
    response = await http.get(f"{API}/contacts/birthdays", params=params, headers=headers)

    assert_refused(response, 422, field)


@pytest.mark.parametrize("q", ["%", "_", "\\", "'", '"', "' OR 1=1 --", "\ufffd", "😀"])
async def test_list_contacts_with_special_characters_in_q_returns_200(http, headers, contact, q):
    response = await http.get(f"{API}/contacts", params={"q": q}, headers=headers)

    assert response.status_code == 200, response.text
    assert (response.json()["items"], response.json()["total"]) == ([], 0)


# -- register ----------------------------------------------------------------------------------------------


@pytest.fixture
def hashing_calls(monkeypatch):
    """Every password hash and verification the request makes, counted (and still done)."""
    import app.auth.service
    import app.users.service

    calls: list[str] = []
    real_hash, real_verify = app.users.service.hash_password, app.auth.service.verify_password

    async def counting_hash(settings, password):
        calls.append("hash")
        return await real_hash(settings, password)

    async def counting_verify(settings, password, hashed):
        calls.append("verify")
        return await real_verify(settings, password, hashed)

    monkeypatch.setattr(app.users.service, "hash_password", counting_hash)
    monkeypatch.setattr(app.auth.service, "verify_password", counting_verify)
    return calls


BAD_REGISTER_BODIES = [
    pytest.param({"email": "a@example.com", "password": "p" * MB}, "password", id="1MB-password"),
    pytest.param({"email": "a@example.com", "password": "p" * 1025}, "password", id="1025-char-password"),
    pytest.param({"email": "a@example.com", "password": "é" * 600}, "password", id="1200-byte-password"),
    pytest.param({"email": "a@example.com", "password": "pass\u0000word"}, "password", id="nul-in-password"),
    pytest.param({"email": "a\u0000b@example.com", "password": "password1"}, "email", id="nul-in-email"),
    pytest.param({"email": "a" * MB + "@example.com", "password": "password1"}, "email", id="1MB-email"),
    pytest.param({"email": "a@example.com", "password": "password1", "role": "admin"}, "role", id="role"),
    pytest.param({"email": "a@example.com", "password": None}, "password", id="null-password"),
    pytest.param({"email": None, "password": "password1"}, "email", id="null-email"),
]


@pytest.mark.parametrize(("body", "field"), BAD_REGISTER_BODIES)
async def test_register_with_bad_body_returns_422_before_hashing(http, db, hashing_calls, body, field):
    response = await http.post(f"{API}/auth/register", json=body)

    assert_refused(response, 422, field)
    assert hashing_calls == []
    assert await user_count(db) == 0


RAW_REGISTER_BODIES = [
    pytest.param(b'{"email": "\\ud800@example.com", "password": "password1"}', "email", id="surrogate-email"),
    pytest.param(b'{"email": "a@example.com", "password": "pass\\udc00word"}', "password", id="surrogate-password"),
    pytest.param(b'{"email": "a@example.com", "password": "password1", "\\ud800": 1}', None, id="surrogate-field-name"),
    pytest.param(b'{"email": "a@example.com", "password": ', None, id="truncated-json"),
]


@pytest.mark.parametrize(("raw", "field"), RAW_REGISTER_BODIES)
async def test_register_with_bad_raw_body_returns_422(http, db, hashing_calls, raw, field):
    response = await http.post(f"{API}/auth/register", content=raw, headers={"Content-Type": "application/json"})

    assert_refused(response, 422, field)
    assert hashing_calls == []
    assert await user_count(db) == 0


async def test_register_with_form_body_returns_422(http, db):
    response = await http.post(f"{API}/auth/register", data={"email": "a@example.com", "password": "password1"})

    assert_refused(response, 422)
    assert await user_count(db) == 0


# -- login -------------------------------------------------------------------------------------------------

BAD_LOGIN_FORMS = [
    pytest.param({"username": "a@example.com", "password": "p" * MB}, "password", id="1MB-password"),
    pytest.param({"username": "a@example.com", "password": "é" * 600}, "password", id="1200-byte-password"),
    pytest.param({"username": "a@example.com", "password": "pass\u0000word"}, "password", id="nul-in-password"),
    pytest.param({"username": "a\u0000@example.com", "password": DEFAULT_PASSWORD}, "username", id="nul-in-username"),
    pytest.param({"username": "a" * MB, "password": DEFAULT_PASSWORD}, "username", id="1MB-username"),
    pytest.param({"password": DEFAULT_PASSWORD}, "username", id="no-username"),
    pytest.param({"username": "a@example.com"}, "password", id="no-password"),
    pytest.param({"username": "a@example.com", "password": ""}, "password", id="empty-password"),
    pytest.param(
        {"username": "a@example.com", "password": DEFAULT_PASSWORD, "grant_type": "client_credentials"},
        "grant_type",
        id="wrong-grant-type",
    ),
]


@pytest.mark.parametrize(("form", "field"), BAD_LOGIN_FORMS)
async def test_login_with_bad_form_returns_422_before_hashing(http, db, settings, hashing_calls, form, field):
    await make_user(db, settings, email="a@example.com")

    response = await http.post(f"{API}/auth/login", data=form)

    assert_refused(response, 422, field)
    assert hashing_calls == []


async def test_login_with_json_body_returns_422(http, db, settings, hashing_calls):
    await make_user(db, settings, email="a@example.com")

    response = await http.post(f"{API}/auth/login", json={"username": "a@example.com", "password": DEFAULT_PASSWORD})

    assert_refused(response, 422)
    assert hashing_calls == []


# -- refresh -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="empty"),
        pytest.param({"refresh_token": ""}, id="empty-token"),
        pytest.param({"refresh_token": 1}, id="int-token"),
        pytest.param({"refresh_token": "x" * MB}, id="1MB-token"),
        pytest.param({"refresh_token": "a.b.c", "user_id": 1}, id="extra-field"),
    ],
)
async def test_refresh_with_bad_body_returns_422(http, body):
    response = await http.post(f"{API}/auth/refresh", json=body)

    assert_refused(response, 422)


@pytest.mark.parametrize("token", ["not-a-token", "a.b.c", "x" * 4096, "\u00e9.\u00e9.\u00e9", "a.b\u0000.c"])
async def test_refresh_with_malformed_token_returns_401(http, token):
    response = await http.post(f"{API}/auth/refresh", json={"refresh_token": token})

    assert_refused(response, 401)
