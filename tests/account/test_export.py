"""The export is complete by the catalog: every table of every schema with a column naming a user (by name, or by
a foreign key to the users) appears in service.export_account, or is excluded here with the reason."""

from __future__ import annotations

import re

import pytest

from shared.db import DatabaseError
from tests.account.conftest import Accounts

# table -> the export section holding its rows
EXPORTED = {
    "auth.users": "account",
    "auth.identities": "identities",
    "public.users": "user",
    "public.user_profiles": "profile",
    "public.billing_customers": "billing_customers",
    "public.subscriptions": "subscriptions",
    "public.subscription_changes": "subscription_changes",
    "public.usage_counters": "usage_counters",
    "public.practice_sessions": "sessions",
    "public.session_questions": "session_questions",
    "public.responses": "answers",
    "archive.responses": "answers",
    "archive.session_questions": "session_questions",
    "public.question_ratings": "ratings",
    "public.achievements": "achievements",
    "public.user_progress": "progress",
    "public.progress_totals": "progress_totals",
    "public.category_abilities": "abilities",
    "public.ai_usage": "ai_usage",
    "public.questions": "provisional_questions",
    "public.question_reports": "question_reports",
    "public.question_transitions": "moderation",
    "storage.objects": "recordings",
    "private.account_deletions": "deletion",
    "public.peer_requests": "peer_requests",
    "public.peer_rooms": "peer_rooms",
    "public.peer_seats": "peer_seats",
    "public.peer_turns": "peer_turns",
    "public.peer_messages": "peer_messages",
    "public.peer_feedback": "peer_feedback",
    "public.peer_blocks": "peer_blocks",
    "public.peer_reports": "peer_reports",
}
EXCLUDED = {
    # The bucket's owner is a project administrator, never a platform user.
    "storage.buckets": "buckets are created by migrations; owner is not a user of the platform",
    "public.served_questions": "the no-repeat ledger: its pairs are the session_questions section, its response ids "
    "the answers section",
    "public.peer_turn_keys": "copies of the shared bank's answer keys for the interviewer of a turn: the turn is in "
    "the peer_turns section, the key is the platform's, not the user's",
}
# Column names that hold a user's id (besides foreign keys to auth.users or public.users).
USER_COLUMNS = ("user_id", "owner", "owner_id", "provisional_for")


def test_every_table_holding_user_data_is_exported_or_excluded_with_a_reason(accounts: Accounts) -> None:
    owned = {
        row[0]
        for row in accounts.conn.execute(
            """select distinct n.nspname || '.' || c.relname from pg_class c
               join pg_namespace n on n.oid = c.relnamespace
               join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
               where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
                 and not c.relispartition  -- exported through its parent (migration 17)
                 and (a.attname = any(%s) or exists (
                   select from pg_constraint f where f.conrelid = c.oid and f.contype = 'f'
                     and f.confrelid in ('auth.users'::regclass, 'public.users'::regclass)))
               union select 'auth.users'""",
            (list(USER_COLUMNS),),
        ).fetchall()
    }
    assert owned - set(EXPORTED) - set(EXCLUDED) == set(), "tables with user data the export misses"
    assert set(EXPORTED) - owned == set(), "the mapping names tables that hold no user column any more"


def test_the_export_holds_a_row_of_every_exported_table(accounts: Accounts) -> None:
    data, _, _ = accounts.full_user()
    export = accounts.database.call("service.export_account", {"user_id": str(data.user_id)})
    empty = sorted(section for section in set(EXPORTED.values()) if export.get(section) in (None, [], {}))
    assert empty == ["deletion"]  # nothing is pending for this user
    assert {answer["archived"] for answer in export["answers"]} == {False, True}
    assert export["account"]["email"] == accounts.email(data.user_id)
    assert "encrypted_password" not in export["account"]


def test_every_part_of_the_export_is_registered_and_each_section_comes_from_one_part(accounts: Accounts) -> None:
    parts = dict(accounts.conn.execute("select part, builder::text from private.account_export_parts").fetchall())
    assert parts == {
        "account": "private.export_part_account(uuid)",
        "adaptive_practice": "private.export_part_adaptive_practice(uuid)",
        "question_curation": "private.export_part_question_curation(uuid)",
        "peer_interviews": "private.export_part_peer_interviews(uuid)",
    }
    data, _, _ = accounts.full_user()
    sections = [
        key
        for builder in parts.values()
        for key in accounts.conn.execute(
            f"select jsonb_object_keys({builder.removesuffix('(uuid)')}(%s))", (data.user_id,)
        ).fetchall()
    ]
    assert len(sections) == len(set(sections))
    assert set(EXPORTED.values()) - {"answers"} <= set(k for (k,) in sections)


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        ("select jsonb_build_object('profile', 'another part''s section')", "repeats sections {profile}"),
        ("select '[]'::jsonb", "returned array, not an object of sections"),
        ("select null::jsonb", "returned null, not an object of sections"),
    ],
)
def test_a_part_that_would_overwrite_or_garble_the_export_is_refused(
    accounts: Accounts, body: str, refusal: str
) -> None:
    data, _, _ = accounts.full_user()
    conn = accounts.conn
    conn.execute(f"create function private.export_part_broken(uid uuid) returns jsonb language sql as $$ {body} $$")
    conn.execute("grant execute on function private.export_part_broken(uuid) to service_role")
    try:
        conn.execute("insert into private.account_export_parts values ('broken', 'private.export_part_broken(uuid)')")
        with pytest.raises(DatabaseError, match=re.escape(refusal)):
            accounts.database.call("service.export_account", {"user_id": str(data.user_id)})
    finally:
        conn.execute("delete from private.account_export_parts where part = 'broken'")
        conn.execute("drop function private.export_part_broken(uuid)")
