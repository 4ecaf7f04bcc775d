"""A Hypothesis state machine of the contacts API against a model in memory: two users create, replace (PUT), patch,
delete, get, list, search and ask for birthdays, at their own ids and at each other's; every answer must be the
model's. The app runs in process (httpx ASGITransport) on a PostgreSQL database and a Redis of its own, with the
cache on, so each step also checks that the cache never answers differently from the database.

The app lives on an event loop in a thread of its own: Hypothesis drives the machine synchronously, and the test
session's own loop stays untouched.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from app.core.config import app_settings
from app.core.db import Database
from app.core.migrations import upgrade_to_head
from app.main import create_app
from tests.conftest import make_settings
from tests.reliability.conftest import API, PASSWORD, fresh_database, start_redis
from tests.reliability.secrets_scan import SecretScanner

pytestmark = pytest.mark.postgres_only

T = TypeVar("T")
ABSENT_ID = 2**62
FIELDS = ("first_name", "last_name", "email", "phone", "birthday", "notes")


class AppThread:
    """The app, its database and an httpx client, on an event loop running in a background thread."""

    def __init__(self, settings: Any, scanner: SecretScanner) -> None:
        self.settings = settings
        self.scanner = scanner
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="state-machine-app", daemon=True)
        self.thread.start()
        self.requests = 0
        self.call(self._start())

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _start(self) -> None:
        self.database = Database.from_settings(self.settings)
        await upgrade_to_head(self.database.engine)
        self.app = create_app(self.settings, self.database)
        self.app.dependency_overrides[app_settings] = lambda: self.settings
        self.lifespan = self.app.router.lifespan_context(self.app)
        await self.lifespan.__aenter__()

        async def scan(response: httpx.Response) -> None:
            await response.aread()
            self.requests += 1
            self.scanner.scan_response(response.request.url.path, response.status_code, response.content)

        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://model.test", event_hooks={"response": [scan]}
        )

    async def _stop(self) -> None:
        await self.http.aclose()
        await self.lifespan.__aexit__(None, None, None)
        await self.database.dispose()

    def request(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.call(self.http.request(method, path, headers=headers, **kwargs))

    def close(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def app_thread(postgres_admin_url: str, secret_scanner: SecretScanner) -> Iterator[AppThread]:
    with fresh_database(postgres_admin_url, "model") as database_url:
        redis = start_redis()
        settings = make_settings(
            database_url=database_url,
            redis_url=redis.url,
            require_email_verification=False,
            rate_limit_enabled=False,
            media_root=tempfile.mkdtemp(prefix="contacts-rel-model-"),
        )
        app = AppThread(settings, secret_scanner)
        try:
            yield app
        finally:
            app.close()
            # This Redis goes away with the module: the secrets scan reads it now.
            secret_scanner.scan_redis(redis.url, "state machine (in process)")
            redis.close()


# -- the model -------------------------------------------------------------------------------------------------


@dataclass
class ModelContact:
    id: int
    user: int
    first_name: str
    last_name: str | None
    email: str | None
    phone: str | None
    birthday: date | None
    notes: str | None
    created_at: str = ""
    updated_at: str = ""

    def search_text(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name, self.email) if p).lower()

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "phone": self.phone,
            "birthday": self.birthday.isoformat() if self.birthday else None,
            "notes": self.notes,
        }


def _strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


def normalized(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The stored values of a request body, or None if the server must refuse it (422)."""
    values = dict(payload)
    for name in ("first_name", "last_name", "phone"):
        if name in values:
            values[name] = _strip(values[name])
    if "first_name" in values and not values["first_name"]:
        return None  # required, or set to null/blank in a PATCH
    if values.get("birthday") is not None:
        values["birthday"] = date.fromisoformat(values["birthday"])
    return values


def next_occurrence(birthday: date, today: date, days: int) -> date | None:
    """The first day in today..today+days on which `birthday` is celebrated (Feb 29 on Feb 28 in common years)."""
    end = today + timedelta(days=days)
    for year in range(today.year, end.year + 1):
        try:
            day = date(year, birthday.month, birthday.day)
        except ValueError:
            day = date(year, 2, 28)
        if today <= day <= end:
            return day
    return None


# -- strategies ------------------------------------------------------------------------------------------------

NAMES = st.text(alphabet="abcAB -", min_size=0, max_size=6)
EMAILS = st.sampled_from(["ann@example.com", "Ann@example.com", "ANN@example.com", "bob@example.org", "cy@example.net"])
PHONES = st.sampled_from(["+1 555 0100", " 555-0199 ", "030 (1234) 56 ext. 5", "+44 20 7946 0958"])
SPECIAL_DAYS = [date(2000, 2, 29), date(1999, 2, 28), date(1990, 3, 1), date(1800, 1, 1), date(1985, 12, 31)]


def birthdays() -> st.SearchStrategy[str]:
    today = datetime.now(UTC).date()
    near = [today.replace(year=1990) + timedelta(days=d) for d in (-1, 0, 1, 6, 7, 8, 30)]
    near = [d if d <= today else d.replace(year=1989) for d in near]
    return st.one_of(st.sampled_from(SPECIAL_DAYS + near), st.dates(min_value=date(1800, 1, 1), max_value=today)).map(
        date.isoformat
    )


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


FULL_BODIES = st.fixed_dictionaries(
    {"first_name": st.one_of(st.sampled_from(["Ann", "Bob", "ann b", "Cy"]), NAMES)},
    optional={
        "last_name": optional(NAMES),
        "email": optional(EMAILS),
        "phone": optional(PHONES),
        "birthday": optional(birthdays()),
        "notes": optional(st.text(alphabet="xyz 12", max_size=8)),
    },
)
PARTIAL_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "first_name": optional(st.one_of(st.sampled_from(["Dee", "eve"]), NAMES)),
        "last_name": optional(NAMES),
        "email": optional(EMAILS),
        "phone": optional(PHONES),
        "birthday": optional(birthdays()),
        "notes": optional(st.text(alphabet="xyz 12", max_size=8)),
    },
)
QUERIES = st.one_of(st.sampled_from(["ann", "A", " b ", "example", "@example.org", "-", "zz", ""]), NAMES)


class ContactsModel(RuleBasedStateMachine):
    app: AppThread

    def __init__(self) -> None:
        super().__init__()
        self.contacts: dict[int, ModelContact] = {}
        self.ids: list[int] = []  # every id ever created (deleted ones too) plus one that never existed
        self.tokens: list[str] = []
        self.user_ids: list[int] = []
        self.steps = 0

    @initialize()
    def two_users(self) -> None:
        for _ in range(2):
            email = f"model-{secrets.token_hex(5)}@example.com"
            registered = self.app.request("POST", f"{API}/auth/register", json={"email": email, "password": PASSWORD})
            assert registered.status_code == 201, registered.text
            login = self.app.request("POST", f"{API}/auth/login", data={"username": email, "password": PASSWORD})
            assert login.status_code == 200, login.text
            self.tokens.append(login.json()["access_token"])
            self.user_ids.append(registered.json()["id"])

    # -- helpers -----------------------------------------------------------------------------------------------

    def _send(self, user: int, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.steps += 1
        return self.app.request(method, path, self.tokens[user], **kwargs)

    def _owned(self, user: int) -> list[ModelContact]:
        return sorted((c for c in self.contacts.values() if c.user == user), key=lambda c: c.id)

    def _email_taken(self, user: int, email: str | None, except_id: int | None = None) -> bool:
        return email is not None and any(
            c.email is not None and c.email.lower() == email.lower() and c.id != except_id for c in self._owned(user)
        )

    def _assert_contact(self, data: dict[str, Any], expected: ModelContact) -> None:
        assert {k: data[k] for k in ("id", *FIELDS)} == expected.as_json()
        assert data["user_id"] == self.user_ids[expected.user]
        if expected.created_at:
            assert data["created_at"] == expected.created_at
            assert data["updated_at"] >= expected.updated_at
        assert data["updated_at"] >= data["created_at"]
        expected.created_at, expected.updated_at = data["created_at"], data["updated_at"]

    def _read_back(self, user: int, contact_id: int) -> None:
        """GET the contact the way any later read would, and compare it with the model: right after a write, so
        that a cached copy the write failed to invalidate (the read before the write cached it) shows at once."""
        response = self._send(user, "GET", f"{API}/contacts/{contact_id}")
        expected = self._visible(user, contact_id)
        if expected is None:
            assert response.status_code == 404, response.text
        else:
            assert response.status_code == 200, response.text
            self._assert_contact(response.json(), expected)

    def _pick(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from([*self.ids, ABSENT_ID]), label="contact id")

    def _visible(self, user: int, contact_id: int) -> ModelContact | None:
        contact = self.contacts.get(contact_id)
        return contact if contact is not None and contact.user == user else None

    def _assert_page(self, response: httpx.Response, expected: list[ModelContact], skip: int, limit: int) -> None:
        assert response.status_code == 200, response.text
        page = response.json()
        assert (page["total"], page["skip"], page["limit"]) == (len(expected), skip, limit)
        items = page["items"]
        window = expected[skip : skip + limit]
        assert [item["id"] for item in items] == [c.id for c in window]
        for item, contact in zip(items, window, strict=True):
            self._assert_contact(item, contact)

    # -- writes ------------------------------------------------------------------------------------------------

    @rule(user=st.integers(0, 1), body=FULL_BODIES)
    def create(self, user: int, body: dict[str, Any]) -> None:
        response = self._send(user, "POST", f"{API}/contacts", json=body)
        values = normalized(body)
        if values is None:
            assert response.status_code == 422, response.text
            return
        if self._email_taken(user, values.get("email")):
            assert response.status_code == 409, response.text
            assert response.json()["error"] == "ContactEmailExists"
            return
        assert response.status_code == 201, response.text
        data = response.json()
        contact = ModelContact(
            data["id"],
            user,
            values["first_name"],
            values.get("last_name"),
            values.get("email"),
            values.get("phone"),
            values.get("birthday"),
            values.get("notes"),
        )
        self._assert_contact(data, contact)
        self.contacts[contact.id] = contact
        self.ids.append(contact.id)

    @rule(user=st.integers(0, 1), data=st.data(), body=FULL_BODIES)
    def replace(self, user: int, data: st.DataObject, body: dict[str, Any]) -> None:
        contact_id = self._pick(data)
        self._read_back(user, contact_id)
        response = self._send(user, "PUT", f"{API}/contacts/{contact_id}", json=body)
        self._check_update(user, contact_id, response, normalized(body), partial=False)
        self._read_back(user, contact_id)

    @rule(user=st.integers(0, 1), data=st.data(), body=PARTIAL_BODIES)
    def patch(self, user: int, data: st.DataObject, body: dict[str, Any]) -> None:
        contact_id = self._pick(data)
        self._read_back(user, contact_id)
        response = self._send(user, "PATCH", f"{API}/contacts/{contact_id}", json=body)
        self._check_update(user, contact_id, response, normalized(body), partial=True)
        self._read_back(user, contact_id)

    def _check_update(
        self, user: int, contact_id: int, response: httpx.Response, values: dict[str, Any] | None, *, partial: bool
    ) -> None:
        if values is None:
            assert response.status_code == 422, response.text
            return
        contact = self._visible(user, contact_id)
        if contact is None:
            assert response.status_code == 404, response.text
            assert response.json()["error"] == "ContactNotFound"
            return
        changes = values if partial else {k: values.get(k) for k in FIELDS}
        if "email" in changes and self._email_taken(user, changes["email"], except_id=contact_id):
            assert response.status_code == 409, response.text
            return
        assert response.status_code == 200, response.text
        for name, value in changes.items():
            setattr(contact, name, value)
        self._assert_contact(response.json(), contact)

    @rule(user=st.integers(0, 1), data=st.data())
    def delete(self, user: int, data: st.DataObject) -> None:
        contact_id = self._pick(data)
        self._read_back(user, contact_id)
        response = self._send(user, "DELETE", f"{API}/contacts/{contact_id}")
        if self._visible(user, contact_id) is None:
            assert response.status_code == 404, response.text
            return
        assert response.status_code == 204, response.text
        del self.contacts[contact_id]
        self._read_back(user, contact_id)

    # -- reads -------------------------------------------------------------------------------------------------

    @rule(user=st.integers(0, 1), data=st.data())
    def get(self, user: int, data: st.DataObject) -> None:
        contact_id = self._pick(data)
        response = self._send(user, "GET", f"{API}/contacts/{contact_id}")
        contact = self._visible(user, contact_id)
        if contact is None:
            assert response.status_code == 404, response.text
            assert response.json() == {"error": "ContactNotFound", "detail": "Contact not found."}
            return
        assert response.status_code == 200, response.text
        self._assert_contact(response.json(), contact)

    @rule(user=st.integers(0, 1), skip=st.integers(0, 4), limit=st.sampled_from([1, 2, 3, 100]))
    def list_page(self, user: int, skip: int, limit: int) -> None:
        response = self._send(user, "GET", f"{API}/contacts", params={"skip": skip, "limit": limit})
        self._assert_page(response, self._owned(user), skip, limit)

    @rule(user=st.integers(0, 1), q=QUERIES, limit=st.sampled_from([2, 100]))
    def search(self, user: int, q: str, limit: int) -> None:
        response = self._send(user, "GET", f"{API}/contacts", params={"q": q, "limit": limit})
        needle = q.strip().lower()
        expected = [c for c in self._owned(user) if needle in c.search_text()]
        self._assert_page(response, expected, 0, limit)

    @rule(user=st.integers(0, 1), days=st.sampled_from([0, 1, 7, 30, 365]), limit=st.sampled_from([2, 100]))
    def upcoming_birthdays(self, user: int, days: int, limit: int) -> None:
        today = datetime.now(UTC).date()
        response = self._send(user, "GET", f"{API}/contacts/birthdays", params={"days": days, "limit": limit})
        if datetime.now(UTC).date() != today:
            return  # midnight passed during the request: the window moved
        upcoming = []
        for contact in self._owned(user):
            if contact.birthday is not None:
                day = next_occurrence(contact.birthday, today, days)
                if day is not None:
                    key = contact.birthday.month * 100 + contact.birthday.day
                    upcoming.append(((day, key, contact.id), contact))
        expected = [contact for _, contact in sorted(upcoming, key=lambda pair: pair[0])]
        self._assert_page(response, expected, 0, limit)

    @invariant()
    def ids_are_distinct(self) -> None:
        assert len(self.ids) == len(set(self.ids))


def _run_model(app_thread: AppThread, figures: Any, examples: int, steps: int, *, shrink: bool) -> None:
    counted = {"steps": 0, "examples": 0}

    class Machine(ContactsModel):
        app = app_thread

        def teardown(self) -> None:
            counted["steps"] += self.steps
            counted["examples"] += 1

    requests_before = app_thread.requests
    try:
        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples=examples,
                stateful_step_count=steps,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                # Shrinking a failure can take minutes: the quick run reports the failing run as it was found.
                phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if shrink else [])],
            ),
        )
    finally:
        figures(
            requests=app_thread.requests - requests_before,
            notes=f"{counted['examples']} runs, {counted['steps']} model-checked steps (2 users each), in process",
        )
    figures(errors=0)
    assert counted["steps"] >= examples  # the machine ran


def test_contacts_api_matches_its_model(app_thread: AppThread, figures: Any) -> None:
    _run_model(app_thread, figures, examples=15, steps=20, shrink=False)


@pytest.mark.slow
def test_contacts_api_matches_its_model_over_thousands_of_steps(app_thread: AppThread, figures: Any) -> None:
    _run_model(app_thread, figures, examples=250, steps=40, shrink=True)
