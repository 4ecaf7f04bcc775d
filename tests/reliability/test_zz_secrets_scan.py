"""Secrets scan, after the suite's traffic: every value in every Redis the suite used, and every response body the
suite recorded (fuzzing, cross-user matrix, load and fault runs, state machine), decoded and searched for password
hashes ($argon2...), tokens (JWTs: eyJ...eyJ...) and pickled data. Token pairs are allowed only in the bodies of the
three responses that issue them (login, refresh, password change).

Named test_zz_... so that it runs last; marked `slow(also_quick=True)` so that it runs in both the quick and the
slow selection.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.reliability.conftest import API, Accounts, Deployment
from tests.reliability.secrets_scan import SecretScanner, find_secrets, is_pickle

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow(also_quick=True)]


def test_the_scanner_recognises_what_it_looks_for() -> None:
    """A scanner that finds nothing proves nothing unless it would have found something."""
    import base64
    import pickle

    assert find_secrets(b'{"h":"$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA"}') == ["password hash"]
    jwt = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl"
    assert find_secrets(b'{"t":"' + jwt + b'"}') == ["token"]
    assert find_secrets(b'{"t":"' + jwt + b'"}', tokens_allowed=True) == []
    assert find_secrets(pickle.dumps({"a": 1})) == ["pickle"]
    assert find_secrets(pickle.dumps({"a": 1}, protocol=0)) == ["pickle"]
    encoded = base64.b64encode(pickle.dumps([1, 2])).decode()
    assert find_secrets(f'{{"v":"{encoded}"}}'.encode()) == ["pickle (base64)"]
    assert not is_pickle(b'{"id":1,"notes":"v=1."}')
    assert find_secrets(b'{"id":1,"email":"a@example.com","notes":"eyJ but not a token"}') == []


async def test_no_password_hash_token_or_pickle_in_redis_or_any_response(
    deployment: Deployment, accounts: Accounts, secret_scanner: SecretScanner, figures: Any
) -> None:
    # Traffic of this test's own, so that the scan always has the user and contact keys to read.
    async with httpx.AsyncClient(base_url=deployment.base_url, timeout=30) as http:
        for account in (accounts.alice, accounts.admin):
            for path in ("/users/me", "/contacts", "/contacts/birthdays"):
                response = await http.get(f"{API}{path}", headers=account.headers)
                assert response.status_code == 200
                secret_scanner.scan_response(response.request.url.path, response.status_code, response.content)
    secret_scanner.scan_redis(deployment.redis.url, "api server")
    scanner = secret_scanner
    figures(
        requests=scanner.bodies,
        errors=len(scanner.findings) + len(scanner.redis_findings) + len(scanner.undecodable),
        notes=f"{scanner.bodies} response bodies ({scanner.body_bytes / 1e6:.1f} MB) and {scanner.redis_values} "
        f"Redis values under {scanner.redis_keys} keys decoded; findings: {len(scanner.findings)} in bodies, "
        f"{len(scanner.redis_findings)} in Redis, {len(scanner.undecodable)} undecodable values",
    )
    assert scanner.redis_keys > 0
    assert scanner.bodies > 0
    assert scanner.redis_findings == [], scanner.redis_findings[:10]
    assert scanner.undecodable == [], scanner.undecodable[:10]
    assert scanner.findings == [], scanner.findings[:10]
