"""CardDAV on the wire: discovery, Basic with app passwords, PROPFIND, the three reports, cards with ETags and
preconditions, hostile XML; and one book behind two doors (REST and DAV see the same contacts and ETags)."""

from __future__ import annotations

import base64
import time
import xml.etree.ElementTree as ET

import defusedxml.ElementTree as SafeET
import pytest

from app.auth import app_passwords
from app.core.db import commit
from tests.factories import DEFAULT_PASSWORD, auth_headers, make_user
from tests.integration.test_rate_limits import client_at, running_app

API = "/api/v1"
D, C, CS = "DAV:", "urn:ietf:params:xml:ns:carddav", "http://calendarserver.org/ns/"
NS = {"d": D, "c": C, "cs": CS}

CARD = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:Ada Lovelace\r\nN:Lovelace;Ada;;;\r\n"
    "EMAIL;TYPE=HOME:ada@example.com\r\nTEL;TYPE=CELL:+44 20 7946 0958\r\nX-FAVOURITE-ENGINE:analytical\r\n"
    "END:VCARD\r\n"
)


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings, email="ada@example.com")


@pytest.fixture
async def basic(db, settings, owner):
    _, password = await app_passwords.create(db, settings, _principal(owner), "test")
    await commit(db)
    return {"Authorization": "Basic " + base64.b64encode(f"ada@example.com:{password}".encode()).decode()}


def _principal(user):
    from app.users.service import auth_user

    return auth_user(user)


def book(owner) -> str:
    return f"/dav/addressbooks/{owner.id}/contacts/"


async def dav(client, method, path, headers, body: str | bytes | None = None, **extra):
    return await client.request(method, path, headers={**headers, **extra}, content=body)


def xml(response) -> ET.Element:
    assert response.headers["content-type"].startswith("application/xml"), response.text
    return SafeET.fromstring(response.content)


def propfind(*props: str) -> str:
    inner = "".join(f"<{p}/>" for p in props)
    return (
        f'<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:c="{C}" xmlns:cs="{CS}">'
        f"<d:prop>{inner}</d:prop></d:propfind>"
    )


async def test_well_known_redirects_for_get_and_propfind(client):
    for method in ("GET", "PROPFIND"):
        response = await client.request(method, "/.well-known/carddav")
        assert (response.status_code, response.headers["location"]) == (301, "/dav/")


async def test_basic_needs_an_app_password_never_the_account_password(client, basic):
    body = propfind("d:current-user-principal")
    anonymous = await dav(client, "PROPFIND", "/dav/", {}, body)
    account = await dav(
        client,
        "PROPFIND",
        "/dav/",
        {"Authorization": "Basic " + base64.b64encode(f"ada@example.com:{DEFAULT_PASSWORD}".encode()).decode()},
        body,
    )
    app = await dav(client, "PROPFIND", "/dav/", basic, body, Depth="0")

    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert account.status_code == 401
    assert app.status_code == 207


async def test_discovery_from_the_root_to_the_book(client, basic, owner):
    root = xml(await dav(client, "PROPFIND", "/dav/", basic, propfind("d:current-user-principal"), Depth="0"))
    principal = root.find(".//d:current-user-principal/d:href", NS).text
    assert principal == f"/dav/principals/{owner.id}/"

    found = xml(await dav(client, "PROPFIND", principal, basic, propfind("c:addressbook-home-set"), Depth="0"))
    home = found.find(".//c:addressbook-home-set/d:href", NS).text
    listing = xml(await dav(client, "PROPFIND", home, basic, propfind("d:resourcetype", "cs:getctag"), Depth="1"))

    books = [r for r in listing.findall("d:response", NS) if r.find(".//d:resourcetype/c:addressbook", NS) is not None]
    assert [r.find("d:href", NS).text for r in books] == [book(owner)]
    assert books[0].find(".//cs:getctag", NS).text


async def test_options_and_the_books_properties(client, basic, owner):
    options = await dav(client, "OPTIONS", book(owner), basic)
    props = xml(
        await dav(
            client,
            "PROPFIND",
            book(owner),
            basic,
            propfind("d:supported-report-set", "c:supported-address-data", "d:sync-token", "d:unknown-thing"),
            Depth="0",
        )
    )

    assert "addressbook" in options.headers["dav"]
    reports = {e.tag for e in props.findall(".//d:supported-report/d:report/*", NS)}
    assert reports == {f"{{{C}}}addressbook-multiget", f"{{{C}}}addressbook-query", f"{{{D}}}sync-collection"}
    versions = {e.get("version") for e in props.findall(".//c:address-data-type", NS)}
    assert versions == {"3.0", "4.0"}
    statuses = [s.text for s in props.findall(".//d:propstat/d:status", NS)]
    assert statuses == ["HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found"]  # the unknown property is listed missing


async def test_a_card_put_over_dav_is_the_same_contact_and_etag_over_rest(client, basic, owner, settings):
    href = book(owner) + "ada-1.vcf"

    created = await dav(client, "PUT", href, basic, CARD.format(uid="ada-1"), **{"If-None-Match": "*"})
    fetched = await dav(client, "GET", href, basic)
    listed = (await client.get(f"{API}/contacts", headers=auth_headers(settings, owner))).json()["items"]

    assert created.status_code == 201, created.text
    assert fetched.status_code == 200
    assert "X-FAVOURITE-ENGINE:analytical" in fetched.text
    assert "UID:ada-1" in fetched.text
    assert [(c["uid"], c["email"], c["etag"]) for c in listed] == [
        ("ada-1", "ada@example.com", fetched.headers["etag"])
    ]


async def test_preconditions_refuse_a_lost_race_and_thunderbird_may_overwrite(client, basic, owner, settings):
    href = book(owner) + "ada-1.vcf"
    await dav(client, "PUT", href, basic, CARD.format(uid="ada-1"))
    etag = (await dav(client, "GET", href, basic)).headers["etag"]
    contact_id = (await client.get(f"{API}/contacts", headers=auth_headers(settings, owner))).json()["items"][0]["id"]
    await client.patch(f"{API}/contacts/{contact_id}", json={"nickname": "A"}, headers=auth_headers(settings, owner))

    again = await dav(client, "PUT", href, basic, CARD.format(uid="ada-1"), **{"If-None-Match": "*"})
    stale = await dav(client, "PUT", href, basic, CARD.format(uid="ada-1"), **{"If-Match": etag})
    stale_delete = await dav(client, "DELETE", href, basic, **{"If-Match": etag})
    blind = await dav(client, "PUT", href, basic, CARD.format(uid="ada-1").replace("Ada Lovelace", "Ada L"))

    assert (again.status_code, stale.status_code, stale_delete.status_code) == (412, 412, 412)
    assert blind.status_code == 204
    assert (await dav(client, "GET", href, basic)).headers["etag"] != etag


async def test_multiget_with_depth_1_answers_the_cards_and_404_for_the_missing(client, basic, owner):
    await dav(client, "PUT", book(owner) + "ada-1.vcf", basic, CARD.format(uid="ada-1"))
    body = (
        f'<c:addressbook-multiget xmlns:d="DAV:" xmlns:c="{C}"><d:prop><d:getetag/><c:address-data/></d:prop>'
        f"<d:href>{book(owner)}ada-1.vcf</d:href><d:href>{book(owner)}nobody.vcf</d:href></c:addressbook-multiget>"
    )

    answer = xml(await dav(client, "REPORT", book(owner), basic, body, Depth="1"))

    responses = {r.find("d:href", NS).text: r for r in answer.findall("d:response", NS)}
    assert "FN:Ada Lovelace" in responses[book(owner) + "ada-1.vcf"].find(".//c:address-data", NS).text
    assert responses[book(owner) + "nobody.vcf"].find("d:status", NS).text == "HTTP/1.1 404 Not Found"


async def test_sync_collection_follows_the_change_feed_across_both_doors(client, basic, owner, settings):
    rest = auth_headers(settings, owner)
    await dav(client, "PUT", book(owner) + "ada-1.vcf", basic, CARD.format(uid="ada-1"))
    report = (
        '<d:sync-collection xmlns:d="DAV:"><d:sync-token>{}</d:sync-token><d:sync-level>1</d:sync-level>'
        "<d:prop><d:getetag/></d:prop></d:sync-collection>"
    )
    first = xml(await dav(client, "REPORT", book(owner), basic, report.format(""), Depth="1"))
    token = first.find("d:sync-token", NS).text
    bob = (await client.post(f"{API}/contacts", json={"first_name": "Bob"}, headers=rest)).json()
    ada_id = next(
        c["id"] for c in (await client.get(f"{API}/contacts", headers=rest)).json()["items"] if c["uid"] == "ada-1"
    )
    await client.delete(f"{API}/contacts/{ada_id}", headers=rest)

    later = xml(await dav(client, "REPORT", book(owner), basic, report.format(token), Depth="1"))
    nothing = xml(await dav(client, "REPORT", book(owner), basic, report.format(later.find("d:sync-token", NS).text)))
    forged = await dav(client, "REPORT", book(owner), basic, report.format(token + "x"))

    assert [r.find("d:href", NS).text for r in first.findall("d:response", NS)] == [book(owner) + "ada-1.vcf"]
    changed = {r.find("d:href", NS).text: r for r in later.findall("d:response", NS)}
    assert changed[book(owner) + "ada-1.vcf"].find("d:status", NS).text == "HTTP/1.1 404 Not Found"
    assert changed[f"{book(owner)}{bob['uid']}.vcf"].find(".//d:getetag", NS).text == bob["etag"]
    assert nothing.findall("d:response", NS) == []
    assert forged.status_code == 403
    assert xml(forged).find("d:valid-sync-token", NS) is not None


async def test_addressbook_query_matches_text_on_the_common_properties(client, basic, owner):
    await dav(client, "PUT", book(owner) + "ada-1.vcf", basic, CARD.format(uid="ada-1"))
    await dav(
        client,
        "PUT",
        book(owner) + "bob-1.vcf",
        basic,
        CARD.format(uid="bob-1").replace("Ada Lovelace", "Bob Babbage").replace("ada@", "bob@"),
    )
    query = (
        f'<c:addressbook-query xmlns:d="DAV:" xmlns:c="{C}"><d:prop><d:getetag/></d:prop><c:filter>'
        '<c:prop-filter name="EMAIL"><c:text-match match-type="starts-with">BOB@</c:text-match></c:prop-filter>'
        "</c:filter></c:addressbook-query>"
    )

    answer = xml(await dav(client, "REPORT", book(owner), basic, query, Depth="1"))

    assert [r.find("d:href", NS).text for r in answer.findall("d:response", NS)] == [book(owner) + "bob-1.vcf"]


async def test_depth_infinity_another_users_book_and_unsupported_methods_are_refused(
    client, basic, owner, db, settings
):
    other = await make_user(db, settings)

    infinite = await dav(client, "PROPFIND", book(owner), basic, propfind("d:getetag"), Depth="infinity")
    foreign = await dav(client, "PROPFIND", f"/dav/addressbooks/{other.id}/contacts/", basic, propfind("d:getetag"))
    mkcol = await dav(client, "MKCOL", book(owner), basic)
    lock = await dav(client, "GET", "/dav/", basic)

    assert infinite.status_code == 403
    assert xml(infinite).find("d:propfind-finite-depth", NS) is not None
    assert foreign.status_code == 404
    assert mkcol.status_code == 403
    assert lock.status_code == 405


@pytest.mark.parametrize(
    "body",
    [
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        '<d:propfind xmlns:d="DAV:">&b;</d:propfind>',
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        '<d:propfind xmlns:d="DAV:">&x;</d:propfind>',
        "<d:propfind xmlns:d='DAV:'>" + "<a>" * 200 + "</a>" * 200 + "</d:propfind>",
        "not xml at all",
    ],
    ids=["billion-laughs", "xxe", "deep", "garbage"],
)
async def test_hostile_xml_answers_400_quickly_and_touches_nothing(client, basic, owner, body):
    start = time.perf_counter()
    response = await dav(client, "PROPFIND", book(owner), basic, body, Depth="0")

    assert response.status_code == 400
    assert "root:" not in response.text
    assert time.perf_counter() - start < 5


async def test_a_body_over_the_limit_is_refused(client, basic, owner):
    body = propfind("d:getetag").replace("<d:prop>", "<d:prop>" + " " * (1024 * 1024 + 1))

    response = await dav(client, "PROPFIND", book(owner), basic, body, Depth="0")

    assert response.status_code == 413


async def test_delete_over_dav_moves_to_the_trash(client, basic, owner, settings):
    href = book(owner) + "ada-1.vcf"
    await dav(client, "PUT", href, basic, CARD.format(uid="ada-1"))

    deleted = await dav(client, "DELETE", href, basic)

    assert deleted.status_code == 204
    assert (await dav(client, "GET", href, basic)).status_code == 404
    trash = (await client.get(f"{API}/contacts/trash", headers=auth_headers(settings, owner))).json()["items"]
    assert [c["uid"] for c in trash] == ["ada-1"]
    # Written again by a client: back from the trash with the card's fields.
    assert (await dav(client, "PUT", href, basic, CARD.format(uid="ada-1"))).status_code == 201
    assert (await dav(client, "GET", href, basic)).status_code == 200


async def test_guessing_app_passwords_over_basic_is_throttled_like_logins(db, settings, database, owner, basic):
    wrong = {"Authorization": "Basic " + base64.b64encode(b"ada@example.com:aaaa-bbbb-cccc-dddd-eeee-ffff").decode()}
    async with running_app(settings, database, rate_limit_enabled=True) as app:
        async with client_at(app, "198.51.100.7") as guesser, client_at(app, "203.0.113.9") as owner_network:
            guesses = [await dav(guesser, "PROPFIND", "/dav/", wrong, propfind("d:getetag")) for _ in range(5)]
            over = await dav(guesser, "PROPFIND", "/dav/", wrong, propfind("d:getetag"))
            right_but_throttled = await dav(guesser, "PROPFIND", "/dav/", basic, propfind("d:getetag"))
            owner_elsewhere = await dav(owner_network, "PROPFIND", "/dav/", basic, propfind("d:getetag"))

    assert [r.status_code for r in guesses] == [401] * 5
    assert over.status_code == 429
    assert right_but_throttled.status_code == 429
    assert owner_elsewhere.status_code == 207


async def test_a_cached_card_is_never_older_than_the_contact(client, basic, owner, settings):
    href = book(owner) + "ada-1.vcf"
    await dav(client, "PUT", href, basic, CARD.format(uid="ada-1"))
    first = await dav(client, "GET", href, basic)  # serialised and cached under its version
    assert (await dav(client, "GET", href, basic)).text == first.text
    rest = auth_headers(settings, owner)
    contact_id = (await client.get(f"{API}/contacts", headers=rest)).json()["items"][0]["id"]

    await client.patch(f"{API}/contacts/{contact_id}", json={"nickname": "Countess"}, headers=rest)
    after = await dav(client, "GET", href, basic)

    assert "NICKNAME:Countess" in after.text
    assert after.headers["etag"] != first.headers["etag"]
