from __future__ import annotations

from tests.factories import auth_headers, make_contact, make_user


async def test_read_own_contact_returns_it(client, db, settings):
    user = await make_user(db, settings)
    contact = await make_contact(db, user, first_name="Ada")
    response = await client.get(f"/api/v1/contacts/{contact.id}", headers=auth_headers(settings, user))
    assert response.status_code == 200
    assert response.json()["first_name"] == "Ada"
