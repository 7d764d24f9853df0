"""Retention by partition: a month of served questions and answers past the window leaves the live tables whole
(detached concurrently) for archive.session_questions and archive.responses, where its owner still reads it and
account deletion still removes it; a month of AI calls past its window is dropped; an interrupted run is finished
by the next one."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from functions.analytics.retention import run_retention
from prep import localdb, migrations
from shared.db import DatabaseError
from shared.db.rls import acting_as
from tests.analytics.history import practise, practitioner
from tests.support.identities import user_claims

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)
LIVE = ("public.session_questions", "public.responses", "public.ai_usage")


@pytest.fixture(scope="module")
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    """Committed as it goes: detaching concurrently needs data other transactions can see."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        for parent in LIVE:
            for month in ("2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01", "2026-12-01", "2027-01-01"):
                connection.execute("select private.create_month_partition(%s, %s)", (parent, month))
        yield connection


def practise_then(conn: psycopg.Connection, user: uuid.UUID, at: str, scores: list[float], **kwargs: str) -> uuid.UUID:
    """A session at `at` whose questions were also served at `at` (practise serves them now)."""
    session = practise(conn, user, at, scores, **kwargs)
    conn.execute("update public.session_questions set served_at = %s where session_id = %s", (at, session))
    return session


def served_where(conn: psycopg.Connection, session: uuid.UUID) -> set[str]:
    return {
        row[0]
        for row in conn.execute(
            "select tableoid::regclass::text from public.session_questions where session_id = %s"
            " union all select tableoid::regclass::text from archive.session_questions where session_id = %s",
            (session, session),
        )
    }


def where(conn: psycopg.Connection, response: uuid.UUID) -> str:
    return conn.execute(
        "select tableoid::regclass::text from public.responses where id = %s"
        " union all select tableoid::regclass::text from archive.responses where id = %s",
        (response, response),
    ).fetchone()[0]


def answers(conn: psycopg.Connection, session: uuid.UUID) -> list[uuid.UUID]:
    return [r[0] for r in conn.execute("select id from public.response_history where session_id = %s", (session,))]


def is_partition_of(conn: psycopg.Connection, table: str, parent: str) -> bool:
    return conn.execute(
        "select exists (select from pg_inherits where inhrelid = to_regclass(%s) and inhparent = %s::regclass)",
        (table, parent),
    ).fetchone()[0]


def not_the_parents(conn: psycopg.Connection, partition: str) -> list[str]:
    """What a partition has that a partition made from its parent would not: check constraints and foreign keys
    of its own, column defaults other than the parent's, indexes not the parent's."""
    return [
        row[0]
        for row in conn.execute(
            """
            select format('constraint %%s', c.conname) from pg_constraint c
            where c.conrelid = %(p)s::regclass
              and ((c.contype = 'c' and c.coninhcount = 0) or (c.contype = 'f' and c.conparentid = 0))
            union all
            select format('default of %%s', a.attname) from pg_attribute a
            join pg_inherits i on i.inhrelid = a.attrelid
            join pg_attribute pa on pa.attrelid = i.inhparent and pa.attname = a.attname
            left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
            left join pg_attrdef pd on pd.adrelid = pa.attrelid and pd.adnum = pa.attnum
            where a.attrelid = %(p)s::regclass and a.attnum > 0 and not a.attisdropped
              and pg_get_expr(d.adbin, d.adrelid) is distinct from pg_get_expr(pd.adbin, pd.adrelid)
            union all
            select format('index %%s', i.indexrelid::regclass) from pg_index i
            where i.indrelid = %(p)s::regclass
              and not exists (select from pg_inherits h where h.inhrelid = i.indexrelid)
            order by 1
            """,
            {"p": partition},
        )
    ]


def test_a_month_past_the_window_moves_whole_to_the_archive(database_url: str, conn: psycopg.Connection) -> None:
    user, stranger = practitioner(conn), practitioner(conn)
    old = practise_then(conn, user, "2025-01-15 10:00+00", [80, 60])
    kept = practise_then(conn, user, "2025-03-02 10:00+00", [90], category="technical")
    with acting_as(conn, user_claims(user)):
        before = conn.execute("select * from public.response_history order by id").fetchall()
        summaries = conn.execute("select * from public.session_summaries order by id").fetchall()
    exported = conn.execute("select service.export_account(%s) -> 'session_questions'", (user,)).fetchone()[0]
    assert {where(conn, r) for r in answers(conn, old)} == {"private.responses_p202501"}
    assert served_where(conn, old) == {"private.session_questions_p202501"}

    result = run_retention(database_url, as_of=NOW, keep_months=21, ai_usage_months=120)  # February 2025 and older

    assert result["archived_months"] == [
        "archive.session_questions_p202501",
        "archive.session_questions_p202502",
        "archive.responses_p202501",
        "archive.responses_p202502",
    ]
    assert result["partitions_archived"] == 4
    assert {where(conn, r) for r in answers(conn, old)} == {"archive.responses_p202501"}
    assert served_where(conn, old) == {"archive.session_questions_p202501"}
    assert {where(conn, r) for r in answers(conn, kept)} == {"private.responses_p202503"}
    assert served_where(conn, kept) == {"private.session_questions_p202503"}
    for live in ("responses", "session_questions"):
        assert conn.execute(f"select to_regclass('private.{live}_p202501')").fetchone() == (None,)  # type: ignore[arg-type]
        assert is_partition_of(conn, f"archive.{live}_p202501", f"archive.{live}")
        assert is_partition_of(conn, f"private.{live}_after", f"public.{live}")
    # The owner's history reads the same: answers, session summaries (questions served, answered), the export.
    with acting_as(conn, user_claims(user)):
        assert conn.execute("select * from public.response_history order by id").fetchall() == before
        assert conn.execute("select * from public.session_summaries order by id").fetchall() == summaries
        assert conn.execute(
            "select question_count, answered_count from public.session_summaries where id = %s", (old,)
        ).fetchone() == (2, 2)
    assert conn.execute("select service.export_account(%s) -> 'session_questions'", (user,)).fetchone()[0] == exported
    with acting_as(conn, user_claims(stranger)):
        assert conn.execute("select count(*) from public.response_history").fetchone() == (0,)
        for archived in ("archive.responses_p202501", "archive.session_questions_p202501"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(f"select count(*) from {archived}")  # type: ignore[arg-type]
        assert conn.execute("select count(*) from archive.session_questions").fetchone() == (0,)
    # The archived months are what the archive makes (and a restore makes): nothing left of their live months.
    for archived in ("archive.responses_p202501", "archive.session_questions_p202501"):
        assert not_the_parents(conn, archived) == [], archived

    again = run_retention(database_url, as_of=NOW, keep_months=21, ai_usage_months=120)
    assert (again["archived_months"], again["dropped_months"]) == ([], [])

    # Deleting the account still removes what was archived.
    conn.execute("update public.subscriptions set status = 'canceled' where user_id = %s", (user,))
    conn.execute("delete from auth.users where id = %s", (user,))
    assert conn.execute("select count(*) from archive.responses where user_id = %s", (user,)).fetchone() == (0,)
    assert conn.execute("select count(*) from archive.session_questions where user_id = %s", (user,)).fetchone() == (0,)


def test_question_usage_counts_keep_archived_servings(database_url: str, conn: psycopg.Connection) -> None:
    for parent in ("public.session_questions", "public.responses"):
        conn.execute("select private.create_month_partition(%s, '2024-11-01')", (parent,))
    old = practise_then(conn, practitioner(conn), "2024-11-10 10:00+00", [70])
    run_retention(database_url, as_of=NOW, keep_months=21, ai_usage_months=120)
    question = conn.execute("select question_id from archive.session_questions where session_id = %s", (old,))
    question_id = question.fetchone()[0]
    # The same question served again today, to someone else.
    other = practitioner(conn)
    session = conn.execute(
        "insert into public.practice_sessions (user_id, session_type) values (%s, 'quick') returning id", (other,)
    ).fetchone()[0]
    conn.execute(  # unless starting the session served it already
        "insert into public.session_questions (session_id, user_id, question_id, position) select %s, %s, %s, 1000"
        " where not exists (select from public.served_questions where user_id = %s and question_id = %s)",
        (session, other, question_id, other, question_id),
    )
    conn.execute("delete from private.rollup_watermarks where name = 'question_stats'")
    conn.execute("select service.rollup_question_stats()")
    servings = conn.execute(
        "select (select count(*) from public.session_questions where question_id = %s),"
        " (select count(*) from archive.session_questions where question_id = %s)",
        (question_id, question_id),
    ).fetchone()
    assert servings[0] >= 1
    assert servings[1] >= 1
    usage = conn.execute("select usage_count from public.questions where id = %s", (question_id,)).fetchone()
    assert usage == (sum(servings),)


def test_months_of_ai_calls_past_their_window_are_dropped(database_url: str, conn: psycopg.Connection) -> None:
    user = practitioner(conn)
    calls = {
        at: conn.execute(
            "insert into public.ai_usage (user_id, purpose, model, cost_usd, latency_ms, succeeded, created_at)"
            " values (%s, 'evaluation', 'gpt-test', 0.01, 100, true, %s) returning id",
            (user, at),
        ).fetchone()[0]
        for at in ("2025-01-20 10:00+00", "2025-04-20 10:00+00", "2026-12-01 10:00+00")
    }

    result = run_retention(database_url, as_of=NOW, keep_months=120, ai_usage_months=19)  # before May 2025

    # From November 2024: an earlier test's history made it (and December, between it and January).
    assert result["dropped_months"] == [
        f"private.ai_usage_p{month}" for month in ("202411", "202412", "202501", "202502", "202503", "202504")
    ]
    assert result["archived_months"] == []
    kept = conn.execute(
        "select created_at::date::text from public.ai_usage where id = any(%s)", (list(calls.values()),)
    )
    assert [row[0] for row in kept] == ["2026-12-01"]
    assert conn.execute("select to_regclass('private.ai_usage_p202501')").fetchone() == (None,)
    assert is_partition_of(conn, "private.ai_usage_after", "public.ai_usage")


def test_an_interrupted_run_is_finished_by_the_next(database_url: str, conn: psycopg.Connection) -> None:
    user = practitioner(conn)
    session = practise_then(conn, user, "2025-03-20 10:00+00", [70])
    # Stopped after detaching the served questions' and the answers' months (before archiving them).
    conn.execute("alter table public.session_questions detach partition private.session_questions_p202503")
    conn.execute("alter table public.responses detach partition private.responses_p202503")

    result = run_retention(database_url, as_of=NOW, keep_months=20)

    assert result["archived_months"] == ["archive.session_questions_p202503", "archive.responses_p202503"]
    assert {where(conn, r) for r in answers(conn, session)} == {"archive.responses_p202503"}
    assert served_where(conn, session) == {"archive.session_questions_p202503"}


def test_a_detach_cancelled_half_way_is_finalized(database_url: str, conn: psycopg.Connection) -> None:
    user = practitioner(conn)
    session = practise_then(conn, user, "2025-04-20 10:00+00", [75])
    with psycopg.connect(database_url) as reader, psycopg.connect(database_url, autocommit=True) as detacher:
        reader.execute("select count(*) from public.responses")  # an open transaction the detach must wait for
        pid = detacher.info.backend_pid

        def detach() -> None:
            with pytest.raises(psycopg.errors.QueryCanceled):
                detacher.execute("alter table public.responses detach partition private.responses_p202504 concurrently")

        thread = threading.Thread(target=detach)
        thread.start()
        deadline = time.monotonic() + 10
        while not conn.execute(
            "select inhdetachpending from pg_inherits where inhrelid = 'private.responses_p202504'::regclass"
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "the detach never reached its second phase"
            time.sleep(0.05)
        conn.execute("select pg_cancel_backend(%s)", (pid,))
        thread.join(10)
        reader.rollback()

    result = run_retention(database_url, as_of=NOW, keep_months=19)

    assert result["archived_months"] == ["archive.session_questions_p202504", "archive.responses_p202504"]
    assert {where(conn, r) for r in answers(conn, session)} == {"archive.responses_p202504"}
    assert served_where(conn, session) == {"archive.session_questions_p202504"}


def test_nothing_is_detached_while_next_month_has_no_partition(database_url: str, conn: psycopg.Connection) -> None:
    result = run_retention(database_url, as_of=datetime(2035, 1, 10, tzinfo=UTC), keep_months=1, ai_usage_months=1)
    assert result["skipped"] == dict.fromkeys(LIVE, "this month or the next has no partition yet")
    assert (result["archived_months"], result["dropped_months"]) == ([], [])
    for parent in LIVE:
        table = parent.removeprefix("public.")
        assert is_partition_of(conn, f"private.{table}_p202612", parent)
        assert is_partition_of(conn, f"private.{table}_after", parent)


@pytest.mark.parametrize("windows", [{"keep_months": 0}, {"keep_months": 12, "ai_usage_months": 121}])
def test_the_windows_are_bounded(database_url: str, windows: dict[str, int]) -> None:
    with pytest.raises(DatabaseError) as refused:
        run_retention(database_url, as_of=NOW, **windows)
    assert refused.value.status == 422


@pytest.mark.parametrize("table", ["private.stray_p202501", "private.stripe_events"])
def test_only_a_month_of_a_partitioned_table_can_be_retired(conn: psycopg.Connection, table: str) -> None:
    conn.execute("create table if not exists private.stray_p202501 (id int)")
    with pytest.raises(psycopg.Error) as refused:
        conn.execute("select private.retire_partition(%s::regclass)", (table,))
    assert refused.value.sqlstate == "PT422"
    assert conn.execute("select to_regclass(%s) is not null", (table,)).fetchone() == (True,)


def test_migration_34_conforms_the_months_archived_before_it(server_url: str, template_db: str) -> None:
    with localdb.scratch_database(server_url, template=template_db) as url, psycopg.connect(url, autocommit=True) as db:
        assert "20261205000034" in [m.version for m in migrations.rollback(db, to_version="20261205000033")]
        for parent in LIVE:
            db.execute("select private.create_month_partition(%s, '2025-01-01')", (parent,))
        session = practise_then(db, practitioner(db), "2025-01-15 10:00+00", [80])
        run_retention(url, as_of=NOW, keep_months=22, ai_usage_months=120)  # January 2025, retired as 21. did it
        archived = ("archive.responses_p202501", "archive.session_questions_p202501")
        before = {table: not_the_parents(db, table) for table in archived}
        assert "constraint responses_user_id_fkey" in before["archive.responses_p202501"]
        assert "default of category" in before["archive.responses_p202501"]
        assert all(any(e.endswith("_check") for e in extras) for extras in before.values()), before

        assert [m.version for m in migrations.migrate(db, to_version="20261205000034")] == ["20261205000034"]

        assert {table: not_the_parents(db, table) for table in archived} == {table: [] for table in archived}
        assert {where(db, r) for r in answers(db, session)} == {"archive.responses_p202501"}
