"""Schemathesis against the running server's own OpenAPI schema: every check, stateless and stateful, as two users
and an administrator (see fuzzing.py)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from schemathesis.checks import CHECKS

from tests.reliability.conftest import Accounts, Deployment
from tests.reliability.fuzzing import SchemaFuzzer
from tests.reliability.secrets_scan import SecretScanner

pytestmark = pytest.mark.postgres_only


def _fuzz(
    deployment: Deployment,
    accounts: Accounts,
    scanner: SecretScanner,
    figures: Any,
    *,
    positive: int,
    negative: int,
    scenarios: int,
    steps: int,
    minimum: int,
) -> None:
    identities = {a.email.split("-")[0]: a.access_token for a in (accounts.alice, accounts.bob, accounts.admin)}
    fuzzer = SchemaFuzzer(
        deployment.base_url, identities, {a.id for a in (accounts.alice, accounts.bob, accounts.admin)}, scanner
    )
    seed = random.randrange(2**32)
    fuzzer.run_stateless(positive, negative, seed)
    fuzzer.run_stateful(scenarios, steps)
    stats = fuzzer.stats
    generated = stats.generated + stats.stateful_steps
    kinds = Counter(f.kind for f in stats.findings)
    figures(
        requests=generated,
        errors=len(stats.findings),
        notes=f"{stats.generated} stateless + {stats.stateful_steps} stateful cases ({stats.scenarios} scenarios, "
        f"{stats.restarts} restarts), {len(stats.checks_run)} checks on each; 5xx: {stats.server_errors}; "
        f"findings: {dict(kinds) or 'none'}; seed {seed}",
    )
    # One example of each distinct finding, with a curl command to reproduce it.
    distinct = {(f.kind, f.operation): f for f in stats.findings}
    report = "\n\n".join(str(f) for f in distinct.values())

    assert generated >= minimum
    # Every check schemathesis has ran on the responses (all are on: none is configured off).
    assert set(CHECKS.get_all_names()) <= set(stats.checks_run), stats.checks_run
    assert stats.server_errors == 0, report
    assert stats.by_kind("ServerError") == [], report
    assert stats.schema_violations == [], report
    assert stats.by_kind("IgnoredAuth") == [], report
    assert stats.by_kind("UseAfterFree") == [], report
    assert stats.findings == [], report


def test_schema_fuzzing_finds_no_server_error_schema_violation_or_auth_flaw(
    deployment: Deployment, accounts: Accounts, secret_scanner: SecretScanner, figures: Any
) -> None:
    _fuzz(deployment, accounts, secret_scanner, figures, positive=32, negative=14, scenarios=30, steps=10, minimum=1000)


@pytest.mark.slow
def test_schema_fuzzing_long_run(
    deployment: Deployment, accounts: Accounts, secret_scanner: SecretScanner, figures: Any
) -> None:
    _fuzz(
        deployment,
        accounts,
        secret_scanner,
        figures,
        positive=150,
        negative=60,
        scenarios=300,
        steps=15,
        minimum=5000,
    )
