"""`contacts-api import` and `contacts-api export`, run as a user runs them: the same report as the API, a progress
bar on the terminal, and an export that imports back as the same contacts."""

from __future__ import annotations

import json
from pathlib import Path

import vobject

from tests.factories import auth_headers, make_contact, make_user
from tests.integration.test_cli import _run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "interchange"


async def test_cli_import_prints_the_report_and_stores_the_contacts(db, settings, client):
    owner = await make_user(db, settings, email="mover@example.com")

    result = _run(["import", str(FIXTURES / "icloud.vcf"), "--user", "Mover@example.com"], settings)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["format"], report["created"], report["refused_count"]) == ("vcard", 2, 0)
    listed = (await client.get("/api/v1/contacts", headers=auth_headers(settings, owner))).json()
    assert sorted(c["first_name"] for c in listed["items"]) == ["Johnny", "Orchard Supply Co."]

    again = _run(["import", str(FIXTURES / "icloud.vcf"), "--user", "mover@example.com"], settings)
    assert json.loads(again.stdout)["unchanged"] == 2


async def test_cli_export_writes_a_file_that_imports_back_unchanged(db, settings, tmp_path):
    owner = await make_user(db, settings, email="leaver@example.com")
    for n in range(3):
        await make_contact(db, owner, first_name=f"Friend{n}", labels=["pals"])
    output = tmp_path / "book.vcf"

    result = _run(["export", "--user", "leaver@example.com", "--format", "vcard", "-o", str(output)], settings)

    assert result.returncode == 0, result.stderr
    assert "3 contacts written" in result.stdout
    assert sorted(card.n.value.given for card in vobject.readComponents(output.read_text())) == [
        "Friend0",
        "Friend1",
        "Friend2",
    ]
    back = _run(["import", str(output), "--user", "leaver@example.com"], settings)
    assert json.loads(back.stdout)["unchanged"] == 3


async def test_cli_refuses_an_unknown_user_and_a_file_that_is_not_contacts(db, settings, tmp_path):
    await make_user(db, settings, email="someone@example.com")
    garbage = tmp_path / "x.vcf"
    garbage.write_bytes(bytes(range(256)))

    unknown = _run(["import", str(FIXTURES / "icloud.vcf"), "--user", "nobody@example.com"], settings)
    refused = _run(["import", str(garbage), "--user", "someone@example.com"], settings)

    assert unknown.returncode == 2
    assert "no user with the email nobody@example.com" in unknown.stderr
    assert refused.returncode == 1
    assert "ImportNotRecognised" in refused.stderr
