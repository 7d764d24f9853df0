"""DELETE /account and GET /account/export over HTTP: who may call them, the confirmation, a pending deletion."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt

from tests.account.conftest import ISSUER, Accounts


def test_without_a_valid_own_token_nothing_is_deleted(accounts: Accounts) -> None:
    data, _, _ = accounts.full_user()
    email = accounts.email(data.user_id)
    expired = accounts.auth(data.user_id, exp=int(time.time()) - 60)
    foreign = {
        "authorization": "Bearer "
        + jwt.encode(
            {
                "sub": str(data.user_id),
                "role": "authenticated",
                "aud": "authenticated",
                "iss": ISSUER,
                "exp": int(time.time()) + 600,
            },
            "another-projects-secret-with-32-characters!!",
            algorithm="HS256",
        )
    }
    for headers in ({}, expired, foreign):
        response = accounts.api.request("DELETE", "/account", json={"confirm": email}, headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert accounts.api.get("/account/export", headers=expired).status_code == 401
    assert accounts.conn.execute("select count(*) from private.account_deletions").fetchone() == (0,)


def test_deleting_needs_the_accounts_email_as_confirmation(accounts: Accounts) -> None:
    data, _, _ = accounts.full_user()
    headers = accounts.auth(data.user_id)
    missing = accounts.api.request("DELETE", "/account", headers=headers)
    assert missing.status_code == 400
    assert missing.json()["title"] == "Confirmation required"
    assert '{"confirm": "<the email address of this account>"}' in missing.json()["detail"]
    wrong = accounts.api.request("DELETE", "/account", json={"confirm": "someone@else.test"}, headers=headers)
    assert wrong.status_code == 400
    assert wrong.json()["detail"] == "the confirmation does not match this account"
    oversized = accounts.api.request("DELETE", "/account", json={"confirm": "x" * 321}, headers=headers)
    assert oversized.status_code == 422
    assert accounts.conn.execute(
        "select count(*) from private.account_deletions where user_id = %s", (data.user_id,)
    ).fetchone() == (0,)


def test_a_confirmed_deletion_answers_200_and_a_pending_one_202_with_retry_after(accounts: Accounts) -> None:
    data, _, _ = accounts.full_user()
    headers = accounts.auth(data.user_id)
    body = {"confirm": accounts.email(data.user_id).upper()}
    accounts.stand_in.outage = True

    pending = accounts.api.request("DELETE", "/account", json=body, headers=headers)
    assert pending.status_code == 202, pending.text
    assert pending.json()["status"] == "pending"
    assert pending.json()["stripe_done"] is False
    assert 1 <= int(pending.headers["retry-after"]) <= 60
    assert "subscriptions" not in pending.json()  # Stripe ids are not the client's business

    accounts.stand_in.outage = False
    done = accounts.api.request("DELETE", "/account", json=body, headers=headers)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "deleted"
    again = accounts.api.request("DELETE", "/account", json=body, headers=headers)
    assert (again.status_code, again.json()["status"]) == (200, "deleted")
    assert accounts.api.get("/account/export", headers=headers).status_code == 404


def test_the_export_pages_every_answer_live_and_archived_exactly_once(accounts: Accounts) -> None:
    data, _, _ = accounts.full_user()
    uid = data.user_id
    accounts.conn.execute(
        """insert into archive.responses
           select (jsonb_populate_record(null::archive.responses, to_jsonb(r) || jsonb_build_object(
                     'id', gen_random_uuid(), 'answer_text', repeat('long answer ', 150),
                     'created_at', now() - make_interval(secs => g)))).*
           from public.responses r, generate_series(1, 40) g where r.id = %s""",
        (data.response_id,),
    )
    expected = {
        row[0]
        for row in accounts.conn.execute(
            "select id from public.responses where user_id = %s union all select id from archive.responses"
            " where user_id = %s",
            (uid, uid),
        ).fetchall()
    }
    seen: list[uuid.UUID] = []
    cursor = None
    pages = 0
    while True:
        page = accounts.database.call(
            "service.export_account", {"user_id": str(uid), "answers_after": cursor, "max_bytes": 10_000}
        )
        pages += 1
        seen += [uuid.UUID(answer["id"]) for answer in page["answers"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert pages > 3
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen))

    first = accounts.api.get("/account/export", headers=accounts.auth(uid))
    assert first.status_code == 200
    assert {"account", "profile", "sessions", "subscriptions", "recordings", "ai_usage"} <= set(first.json())
    assert first.json()["next"] is None  # 42 answers fit one default page
    assert any(answer["archived"] for answer in first.json()["answers"])
    assert len(first.json()["recordings"]) == 3
    bad = accounts.api.get("/account/export", params={"cursor": "not-a-cursor"}, headers=accounts.auth(uid))
    assert (bad.status_code, bad.json()["title"]) == (400, "Invalid cursor")


def test_hostile_bodies_and_cursors_are_refused_before_any_work(accounts: Accounts) -> None:
    data, _, _ = accounts.full_user()
    headers = accounts.auth(data.user_id)
    email = accounts.email(data.user_id)
    for body in (
        {"confirm": email, "user_id": str(uuid.uuid4())},  # no other account can be named
        {"confirm": email, "extra": "x" * 100_000},
        {"confirm": ["an", "array"]},
        [email],
    ):
        refused = accounts.api.request("DELETE", "/account", json=body, headers=headers)
        assert refused.status_code == 422, (body, refused.text)
    forged = base64.urlsafe_b64encode(json.dumps({"created_at": "2026-01-01T00:00:00Z", "id": 1}).encode()).decode()
    for cursor, status in (("A" * 201, 422), ("not-base64!", 400), (forged, 400), ("e30=", 400)):
        page = accounts.api.get("/account/export", params={"cursor": cursor}, headers=headers)
        assert page.status_code == status, (cursor, page.text)
    assert accounts.conn.execute(
        "select count(*) from private.account_deletions where user_id = %s", (data.user_id,)
    ).fetchone() == (0,)


def test_an_export_page_reads_at_most_2000_answers_however_many_there_are(accounts: Accounts) -> None:
    data, _, _ = accounts.full_user()
    accounts.conn.execute(
        """insert into archive.responses
           select (jsonb_populate_record(null::archive.responses, to_jsonb(r) || jsonb_build_object(
                     'id', gen_random_uuid(), 'created_at', now() - make_interval(secs => g)))).*
           from public.responses r, generate_series(1, 2100) g where r.id = %s""",
        (data.response_id,),
    )
    total = accounts.conn.execute(
        "select (select count(*) from public.responses where user_id = %(u)s)"
        " + (select count(*) from archive.responses where user_id = %(u)s)",
        {"u": data.user_id},
    ).fetchone()[0]
    headers = accounts.auth(data.user_id)
    first = accounts.api.get("/account/export", headers=headers).json()
    assert len(first["answers"]) == 2000  # small answers: the row cap ends the page, not the 4 MB budget
    second = accounts.api.get("/account/export", params={"cursor": first["next"]}, headers=headers).json()
    assert second["next"] is None
    assert len({a["id"] for a in first["answers"] + second["answers"]}) == total
