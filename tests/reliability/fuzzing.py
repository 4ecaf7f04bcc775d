"""Schemathesis against the server's own OpenAPI schema, every check on, as two users and an administrator.

Stateless: every operation, positive and negative data, each case sent as one of the three identities in turn
(an auth provider, so that the `ignored_auth` check knows the credentials are real and replays the request without
them and with wrong ones). Stateful: the state machine schemathesis builds from the links it infers (create a
contact, then read, replace, patch, delete it; register, then administer the account ...), where `use_after_free`
and `ensure_resource_availability` apply. Findings are collected rather than raised, so one run reports all.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import unquote

import requests
import schemathesis
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Flaky, Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok

from tests.reliability.secrets_scan import SecretScanner

SCHEMA_VIOLATIONS = frozenset(
    {
        "JsonSchemaError",
        "UndefinedStatusCode",
        "UndefinedContentType",
        "MissingContentType",
        "MalformedMediaType",
        "MissingHeaders",
        "MalformedJson",
        "ContentDeserializationError",
    }
)
ADMIN_USER_ROUTE = "/api/v1/admin/users/{user_id}"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RESTORE = re.compile(r"^/api/v1/contacts/(\d+)/restore(?:\?|$)")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
# Refusals of well-formed requests that the operation documents and that no schema can foresee: a token that is
# not one the service issued, a wrong current password, a file that is not an image.
SEMANTIC_REFUSALS = {
    "GET /api/v1/auth/verify-email": [400],
    "POST /api/v1/auth/reset-password": [400],
    "PUT /api/v1/users/me/password": [400],
    "PUT /api/v1/users/me/avatar": [413, 415],
    # A file that is neither vCard nor CSV, a CSV in an unknown layout, a mapping that names no contact field.
    "POST /api/v1/contacts/import": [400, 413, 415],
}
# 412: an If-Match (header or batch `if_match`) that names another version than the current one, which a schema
# cannot know.
DEFAULT_ACCEPTANCE = ["2xx", "3xx", 401, 403, 404, 409, 412, 429, "5xx"]
# Opaque tokens the service hands out (a list's `next_cursor`, the change feed's `next_token`): one made up is
# refused (400), which no schema can describe. Empty means "from the start" and is judged.
OPAQUE_TOKENS = frozenset({"cursor", "since"})
# Text that must hold a character other than whitespace (pattern `\S`): labels and names.
WHITESPACE_REFUSED = frozenset({"name", "label", "labels", "first_name"})
EARLIEST_BIRTHDAY = date(1800, 1, 1)


def _storable(value: str) -> bool:
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _consistent_entries(body: dict[str, Any]) -> bool:
    """A contact body's cross-field rules: `email`/`phone` sent beside their list agree with its primary entry, a
    list has at most one primary entry, an email is listed once."""
    for single, plural in (("email", "emails"), ("phone", "phones")):
        entries = body.get(plural)
        if single in body and isinstance(entries, list):
            marked = [e.get("value") for e in entries if isinstance(e, dict) and e.get("primary") is True]
            primary = marked[0] if marked else next((e.get("value") for e in entries if isinstance(e, dict)), None)
            if str(body[single] or "").lower() != str(primary or "").lower():
                return False
    for name in ("emails", "phones", "addresses"):
        entries = body.get(name)
        if isinstance(entries, list) and sum(isinstance(e, dict) and e.get("primary") is True for e in entries) > 1:
            return False
    emails = body.get("emails")
    if isinstance(emails, list):
        values = [str(e.get("value")).lower() for e in emails if isinstance(e, dict)]
        if len(values) != len(set(values)):
            return False
    return True


def _within_expressible_constraints(value: Any, key: str | None = None) -> bool:
    """False for data that JSON Schema cannot describe the server's refusal of, so that `positive_data_acceptance`
    judges only what the schema can say: text no database can store (NUL, lone surrogates), birthdays outside
    1800..today and anniversaries before 1800, passwords over 1024 bytes (the schema counts characters), addresses
    that are RFC 5322-valid but not deliverable (reserved domains such as .test), a contact's cross-field rules
    (see _consistent_entries), and made-up opaque tokens."""
    if isinstance(value, dict):
        if not _consistent_entries(value):
            return False
        # An entry of `emails` holds its address under `value`.
        names = {"value": "email"} if key == "emails" else {}
        return all(
            _within_expressible_constraints(item, names.get(str(name), str(name))) for name, item in value.items()
        )
    if isinstance(value, list):
        return all(_within_expressible_constraints(item, key) for item in value)
    if (isinstance(value, float) and abs(value) >= 2**53) or (isinstance(value, int) and abs(value) >= 2**63):
        # Integers near the schema's maximum (MAX_ID, 2**63 - 1) are generated through floats: 9.223372036854776e18
        # or 9223372036854776000 arrive past the maximum, which the server rightly refuses.
        return False
    if not isinstance(value, str):
        return True
    if not _storable(value):
        return False
    if key in OPAQUE_TOKENS and value:
        return False
    if key in WHITESPACE_REFUSED and not value.strip():
        # Regex engines disagree on what `\S` excludes (U+0085 is whitespace to Python, not to the generator).
        return False
    if key in ("birthday", "anniversary"):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            return True  # not a date at all: negative data, which the server must refuse
        return EARLIEST_BIRTHDAY <= day and (key == "anniversary" or day <= date.today())
    if key in ("password", "new_password", "current_password"):
        return len(value.encode("utf-8")) <= 1024
    if key == "email":
        try:
            validate_email(value, check_deliverability=False)
        except EmailNotValidError:
            return False
    return True


ABSENT_USER_ID = 2**62


@dataclass
class Finding:
    kind: str
    operation: str
    title: str
    message: str
    identity: str
    curl: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.operation} as {self.identity}: {self.title}\n{self.message[:800]}\n{self.curl}"


@dataclass
class FuzzStats:
    generated: int = 0
    stateful_steps: int = 0
    http_requests: int = 0
    server_errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    checks_run: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    unsatisfiable: list[str] = field(default_factory=list)
    scenarios: int = 0
    restarts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def by_kind(self, *kinds: str) -> list[Finding]:
        return [f for f in self.findings if f.kind in kinds]

    @property
    def schema_violations(self) -> list[Finding]:
        return [f for f in self.findings if f.kind in SCHEMA_VIOLATIONS]


class SchemaFuzzer:
    """One fuzzing run against `base_url` with `identities` (name -> access token)."""

    def __init__(
        self,
        base_url: str,
        identities: dict[str, str],
        protected_user_ids: set[int],
        scanner: SecretScanner | None = None,
    ) -> None:
        self.base_url = base_url
        self.identities = identities
        self.protected_user_ids = protected_user_ids
        self.scanner = scanner
        self.stats = FuzzStats()
        self.session = requests.Session()
        self.session.hooks["response"].append(self._on_response)
        self.schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=self._config())
        self._rotation = itertools.cycle(sorted(identities))
        self._keys = itertools.count(1)
        self._restored: set[str] = set()  # ids of contacts a restore brought back (see _revived)
        self._identity_of: dict[str, str] = {}
        # The identity of the running stateful scenario (one per scenario: a contact created by one user is, by
        # design, not found by another, which `ensure_resource_availability` would report).
        self.scenario_identity: str | None = None
        self._install_auth()
        self._install_filters()
        self._install_check_counter()

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        with self.stats.lock:
            self.stats.http_requests += 1
            self.stats.statuses[response.status_code] += 1
            if response.status_code >= 500:
                self.stats.server_errors += 1
            restored = RESTORE.match(response.request.path_url)
            if restored and response.request.method == "POST" and response.status_code == 200:
                self._restored.add(restored.group(1))
        if self.scanner is not None and response.request.path_url.startswith("/api/"):
            path = response.request.path_url.split("?", 1)[0]
            self.scanner.scan_response(path, response.status_code, response.content)

    def _install_auth(self) -> None:
        fuzzer = self

        # No caching (each case takes the next identity) and no re-login on 401: a 401 is an answer here.
        @self.schema.auth(refresh_interval=None, retry_on=[])
        class RotatingIdentities:
            def get(self, case: Any, context: Any) -> str:
                name = fuzzer.scenario_identity or next(fuzzer._rotation)
                fuzzer._identity_of[case.id] = name
                return name

            def set(self, case: Any, data: str, context: Any) -> None:
                case.headers = case.headers or {}
                case.headers["Authorization"] = f"Bearer {fuzzer.identities[data]}"

    @staticmethod
    def _config() -> Any:
        operations = [
            {
                "include-name": label,
                "checks": {"positive_data_acceptance": {"expected-statuses": [*DEFAULT_ACCEPTANCE, *statuses]}},
            }
            for label, statuses in SEMANTIC_REFUSALS.items()
        ]
        return schemathesis.Config.from_dict(
            {
                "checks": {"positive_data_acceptance": {"expected-statuses": DEFAULT_ACCEPTANCE}},
                "operations": operations,
            }
        )

    def _install_check_counter(self) -> None:
        @self.schema.hook("after_validate")
        def count_checks(context: Any, case: Any, response: Any, results: Any) -> None:
            with self.stats.lock:
                self.stats.checks_run.update(result.name for result in results)

    def _install_filters(self) -> None:
        @self.schema.hook("filter_body")
        def expressible_body(context: Any, body: Any) -> bool:
            return _within_expressible_constraints(body)

        @self.schema.hook("filter_query")
        def expressible_query(context: Any, query: Any) -> bool:
            return _within_expressible_constraints(query)

        @self.schema.hook("filter_path_parameters")
        def expressible_path(context: Any, path_parameters: Any) -> bool:
            # The generated values arrive already percent-encoded for the URL.
            decoded = {name: unquote(v) if isinstance(v, str) else v for name, v in (path_parameters or {}).items()}
            return _within_expressible_constraints(decoded)

    def _guard(self, case: Any) -> None:
        """The run's own accounts stay as they are: an administrator's PATCH or DELETE aimed at one of them (a
        link from GET /users/me makes that likely) goes to an absent id instead. A well-formed Idempotency-Key is
        made unique to its case: generated keys repeat ("0", "A"), and a key reused with another body is refused
        (422, as documented), which no schema can foresee; malformed keys are sent as generated."""
        key = (case.headers or {}).get(IDEMPOTENCY_HEADER)
        if isinstance(key, str) and IDEMPOTENCY_KEY.fullmatch(key):
            case.headers[IDEMPOTENCY_HEADER] = f"{key[:200]}-{next(self._keys)}"
        if case.operation.path.endswith(ADMIN_USER_ROUTE) and case.method.upper() in ("PATCH", "DELETE"):
            parameters = case.path_parameters or {}
            if str(parameters.get("user_id")) in {str(i) for i in self.protected_user_ids}:
                parameters["user_id"] = ABSENT_USER_ID

    def _revived(self, failure: BaseException, case: Any) -> bool:
        """A use-after-free report for a contact that was restored from the trash after its DELETE: schemathesis
        counts only a create at the same path (or a prefix of it) as bringing a resource back, not a restore."""
        if type(failure).__name__ != "UseAfterFree":
            return False
        contact_id = (case.path_parameters or {}).get("contact_id")
        with self.stats.lock:
            return contact_id is not None and str(contact_id) in self._restored

    def _record(self, exc: BaseException, case: Any, response: Any | None) -> None:
        failures: list[BaseException] = list(exc.exceptions) if isinstance(exc, FailureGroup) else [exc]
        for failure in failures:
            if self._revived(failure, case):
                continue
            title = failure.title if isinstance(failure, Failure) else type(failure).__name__
            message = failure.message if isinstance(failure, Failure) else str(failure)
            try:
                curl = (
                    case.as_curl_command(headers=dict(response.request.headers)) if response else case.as_curl_command()
                )
            except Exception:
                curl = f"{case.method} {case.formatted_path}"
            with self.stats.lock:
                self.stats.findings.append(
                    Finding(
                        type(failure).__name__,
                        case.operation.label,
                        title,
                        message,
                        self._identity_of.get(case.id, "?"),
                        curl,
                    )
                )

    def _validated(self, case: Any) -> None:
        response = None
        self._guard(case)
        try:
            response = case.call(session=self.session)
            case.validate_response(response, transport_kwargs={"session": self.session})
        except (FailureGroup, Failure) as exc:
            self._record(exc, case, response)
        except AssertionError as exc:
            self._record(exc, case, response)

    # -- runs ----------------------------------------------------------------------------------------------------

    def operations(self) -> list[Any]:
        operations = []
        for result in self.schema.get_all_operations():
            if not isinstance(result, Ok):
                raise AssertionError(f"the schema has an operation schemathesis cannot use: {result.err()}")
            operations.append(result.ok())
        return operations

    def run_stateless(self, positive_examples: int, negative_examples: int, seed: int) -> None:
        for operation in self.operations():
            for mode, examples in (
                (GenerationMode.POSITIVE, positive_examples),
                (GenerationMode.NEGATIVE, negative_examples),
            ):
                if examples:
                    self._run_operation(operation, mode, examples, seed)

    def _run_operation(self, operation: Any, mode: GenerationMode, examples: int, seed: int) -> None:
        strategy = operation.as_strategy(generation_mode=mode)

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=False,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def send(case: Any) -> None:
            with self.stats.lock:
                self.stats.generated += 1
            self._validated(case)

        try:
            hypothesis_seed(seed)(send)()
        except Unsatisfiable:
            # No negative input exists for an operation without parameters or body (GET /health).
            self.stats.unsatisfiable.append(f"{operation.label} ({mode.value})")

    def run_stateful(self, scenarios: int, steps: int) -> None:
        fuzzer = self
        base = self.schema.as_state_machine()

        class Machine(base):  # type: ignore[misc, valid-type]
            def setup(self) -> None:
                super().setup()
                fuzzer.scenario_identity = next(fuzzer._rotation)

            def teardown(self) -> None:
                fuzzer.scenario_identity = None
                fuzzer.stats.scenarios += 1
                super().teardown()

            def before_call(self, case: Any) -> None:
                super().before_call(case)
                fuzzer._guard(case)

            def get_call_kwargs(self, case: Any) -> dict[str, Any]:
                return {"session": fuzzer.session}

            def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
                with fuzzer.stats.lock:
                    fuzzer.stats.stateful_steps += 1
                try:
                    super().validate_response(response, case, additional_checks=additional_checks, **kwargs)
                except (FailureGroup, Failure, AssertionError) as exc:
                    fuzzer._record(exc, case, response)

        # A server's state does not rewind: when Hypothesis replays a scenario and the server answers otherwise
        # (a 409 where there was a 201), it stops with Flaky. Like schemathesis' own engine, start a new run.
        attempts = 0
        while fuzzer.stats.scenarios < scenarios and attempts < 20:
            attempts += 1
            machine_settings = settings(
                max_examples=scenarios - fuzzer.stats.scenarios,
                stateful_step_count=steps,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            try:
                Machine.run(settings=machine_settings)
            except (Flaky, Unsatisfiable):
                fuzzer.stats.restarts += 1
