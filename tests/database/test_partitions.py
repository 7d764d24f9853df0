"""Monthly partitions (migrations 17 and 33): partitions never reachable by the API roles, months created ahead
with an alert for rows in a catch-all partition, the partitions read in order, and the guarantees the partitioned
keys could not carry (never served twice, one answer per served question) held by the ledger under real
concurrency."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from bench import postgrest
from prep import localdb, migrations
from shared.db.rls import acting_as
from tests.database.test_rls_matrix import exposed_schemas
from tests.support.dataset import NEXT_POSITION, add_question, populate_user
from tests.support.identities import user_claims

PARENTS = ("public.session_questions", "public.responses", "public.ai_usage", "archive.responses")


def partitions(conn: psycopg.Connection) -> list[tuple[str, str, bool]]:
    """Every partition of every partitioned table: (partition, schema, row security on)."""
    return conn.execute(
        """select c.oid::regclass::text, n.nspname, c.relrowsecurity
           from pg_inherits i
           join pg_class c on c.oid = i.inhrelid join pg_namespace n on n.oid = c.relnamespace
           join pg_class p on p.oid = i.inhparent
           where p.relkind = 'p' and c.relkind in ('r', 'p')"""
    ).fetchall()


def test_every_partition_is_hidden_from_the_api_and_has_row_security(db: psycopg.Connection) -> None:
    # One more month made the way the schedule makes it, so partitions created later are covered too.
    db.execute("select private.create_month_partition('public.responses', '2031-01-01')")
    found = partitions(db)
    assert {name for name, _, _ in found} >= {
        "private.responses_p203012",
        "private.responses_p203101",
        "private.responses_after",
    }
    assert len(found) >= 4 * len(PARENTS) - 1
    exposed = exposed_schemas()
    for name, schema, row_security in found:
        assert schema not in exposed, f"{name} is in an exposed schema"
        assert row_security, f"{name} has row level security off"
        for role in ("anon", "authenticated"):
            for privilege in ("select", "insert", "update", "delete"):
                allowed = db.execute("select has_table_privilege(%s, %s, %s)", (role, name, privilege)).fetchone()[0]
                assert not allowed, f"{role} may {privilege} {name}"


def test_a_user_reads_a_partition_only_through_its_parent(db: psycopg.Connection) -> None:
    owner = populate_user(db)
    other = populate_user(db)
    partition = db.execute(
        "select tableoid::regclass::text from public.responses where id = %s", (owner.response_id,)
    ).fetchone()[0]
    with acting_as(db, user_claims(other.user_id)):
        assert db.execute("select count(*) from public.responses where id = %s", (owner.response_id,)).fetchone() == (
            0,
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction():
            db.execute(f"select count(*) from {partition}")  # type: ignore[arg-type]


def test_realtime_publishes_the_partitions_of_responses_as_responses(db: psycopg.Connection) -> None:
    assert db.execute("select pubviaroot from pg_publication where pubname = 'supabase_realtime'").fetchone() == (True,)
    published = {
        f"{s}.{t}"
        for s, t in db.execute(
            "select schemaname, tablename from pg_publication_tables where pubname = 'supabase_realtime'"
        )
    }
    assert "public.responses" in published
    assert not any(name.startswith("private.") for name in published)


def maintain(conn: psycopg.Connection, as_of: str) -> dict[str, Any]:
    return conn.execute(
        "select service.run_maintenance(%s, %s)", (as_of, Jsonb({"partition_months_ahead": 2}))
    ).fetchone()[0]


def open_alerts(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    return dict(
        conn.execute(
            "select subject, detail from private.operator_alerts"
            " where kind = 'rows_in_catch_all_partition' and resolved_at is null"
        ).fetchall()
    )


def partition_of(conn: psycopg.Connection, table: str, created_at: str) -> str:
    return conn.execute(
        f"select tableoid::regclass::text from {table} where created_at = %s",
        (created_at,),  # type: ignore[arg-type]
    ).fetchone()[0]


def test_months_ahead_are_created_and_a_row_past_them_lands_in_a_catch_all_with_an_alert(
    db: psycopg.Connection,
) -> None:
    user = populate_user(db).user_id
    newest = db.execute("select max(m) from private.attached_months('public.responses') m").fetchone()[0]
    result = maintain(db, "2030-05-20 12:00+00")
    # Every month up to July 2030 (two ahead) of the three live tables: the months stay contiguous.
    months_made = (2030 - newest.year) * 12 + 7 - newest.month
    assert result["partitions_created"] == 3 * months_made
    for parent in ("session_questions", "responses", "ai_usage"):
        assert db.execute("select to_regclass(%s)", (f"private.{parent}_p203007",)).fetchone() == (
            f"private.{parent}_p203007",
        )
    assert maintain(db, "2030-05-21 12:00+00")["partitions_created"] == 0
    assert open_alerts(db) == {}

    # Nobody made August 2031: the insert succeeds into the catch-all, and the next run says so.
    db.execute(
        "insert into public.ai_usage (user_id, purpose, model, latency_ms, succeeded, created_at)"
        " values (%s, 'evaluation', 'm', 1, true, '2031-08-02 00:00+00')",
        (user,),
    )
    assert partition_of(db, "public.ai_usage", "2031-08-02 00:00+00") == "private.ai_usage_after"
    result = maintain(db, "2030-05-21 12:15+00")
    assert result["rows_in_catch_all_partitions"] == {"public.ai_usage": 1}
    alert = open_alerts(db)["public.ai_usage"]
    assert (alert["rows_counted"], alert["catch_all_partition"]) == (1, "private.ai_usage_after")

    # The months up to the stray row's are made, never that month (the catch-all would have to give up its row);
    # emptied, the alert closes and the month is made.
    result = maintain(db, "2031-08-01 00:00+00")
    assert db.execute("select to_regclass('private.ai_usage_p203107')").fetchone() == ("private.ai_usage_p203107",)
    assert db.execute("select to_regclass('private.ai_usage_p203108')").fetchone() == (None,)
    assert db.execute("select to_regclass('private.responses_p203110')").fetchone() == ("private.responses_p203110",)
    db.execute("delete from public.ai_usage where created_at = '2031-08-02 00:00+00'")
    maintain(db, "2031-08-01 00:15+00")
    assert open_alerts(db) == {}
    assert db.execute("select to_regclass('private.ai_usage_p203110')").fetchone() == ("private.ai_usage_p203110",)


def test_a_month_over_rows_of_a_catch_all_is_refused_with_what_to_do(db: psycopg.Connection) -> None:
    user = populate_user(db).user_id
    db.execute(
        "insert into public.ai_usage (user_id, purpose, model, latency_ms, succeeded, created_at)"
        " values (%s, 'evaluation', 'm', 1, true, '2032-02-10 00:00+00')",
        (user,),
    )
    with pytest.raises(psycopg.Error) as refused, db.transaction():
        db.execute("select private.create_month_partition('public.ai_usage', '2032-03-01')")
    assert refused.value.sqlstate == "PT409"
    assert "private.ai_usage_after holds rows of the months" in str(refused.value)
    assert "rows_in_catch_all_partition" in (refused.value.diag.message_hint or "")
    assert partition_of(db, "public.ai_usage", "2032-02-10 00:00+00") == "private.ai_usage_after"


def test_months_ahead_wait_for_a_busy_table_without_failing_the_maintenance(
    db: psycopg.Connection, database_url: str
) -> None:
    """Making a month detaches a catch-all: ACCESS EXCLUSIVE on the parent, given up after 2 s (lock_timeout)."""
    db.commit()
    with psycopg.connect(database_url) as reader:
        reader.execute("select count(*) from public.ai_usage")  # a long read of the table, still open
        started = time.monotonic()
        result = maintain(db, "2033-01-10 00:00+00")
        waited = time.monotonic() - started
    assert list(result["partitions_waiting"]) == ["public.ai_usage"]
    assert "lock timeout" in result["partitions_waiting"]["public.ai_usage"]
    assert 1.5 < waited < 10
    assert db.execute("select to_regclass('private.ai_usage_p203303')").fetchone() == (None,)
    assert db.execute("select to_regclass('private.responses_p203303')").fetchone() == ("private.responses_p203303",)
    db.rollback()


def test_a_month_beyond_either_end_brings_the_months_between_and_a_row_before_the_oldest_is_refused(
    db: psycopg.Connection,
) -> None:
    newest = db.execute("select max(m) from private.attached_months('public.responses') m").fetchone()[0]
    made = db.execute("select private.create_month_partition('public.responses', '2035-06-15')").fetchone()[0]
    assert made == (2035 - newest.year) * 12 + 6 - newest.month
    months = [m for (m,) in db.execute("select m from private.attached_months('public.responses') m order by m")]
    assert all((b.year - a.year) * 12 + b.month - a.month == 1 for a, b in itertools.pairwise(months))
    bounds = db.execute(
        "select pg_get_expr(relpartbound, oid) from pg_class where oid = 'private.responses_after'::regclass"
    ).fetchone()[0]
    assert bounds.startswith("FOR VALUES FROM ('2035-07-01 00:00:00")
    assert bounds.endswith("TO (MAXVALUE)")
    assert db.execute("select private.create_month_partition('public.responses', '2035-06-01')").fetchone() == (0,)
    # Before the oldest month, the months up to it too.
    oldest = months[0]
    made = db.execute("select private.create_month_partition('public.responses', '2020-01-01')").fetchone()[0]
    assert made == (oldest.year - 2020) * 12 + oldest.month - 1
    months = [m for (m,) in db.execute("select m from private.attached_months('public.responses') m order by m")]
    assert all((b.year - a.year) * 12 + b.month - a.month == 1 for a, b in itertools.pairwise(months))

    # Nothing writes a row older than the oldest month (these timestamps default to now()); one is refused whole.
    with pytest.raises(psycopg.errors.CheckViolation) as refused, db.transaction():
        db.execute(
            "insert into public.ai_usage (user_id, purpose, model, latency_ms, succeeded, created_at)"
            " values (%s, 'evaluation', 'm', 1, true, '2019-03-01 00:00+00')",
            (populate_user(db).user_id,),
        )
    assert 'no partition of relation "ai_usage" found for row' in str(refused.value)


def test_months_ahead_are_bounded(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.Error) as refused:
        db.execute("select service.run_maintenance(now(), '{\"partition_months_ahead\": 1000}')")
    assert refused.value.sqlstate == "PT422"


def test_lookups_bounded_by_a_sessions_start_keep_a_generic_plan(db: psycopg.Connection) -> None:
    """Migration 20: a function that bounds served_at by a variable would otherwise be planned again on every call."""
    bounded = db.execute(
        """select p.oid::regprocedure::text, coalesce('plan_cache_mode=force_generic_plan' = any(p.proconfig), false)
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname in ('private', 'service') and p.prosrc ~ 'served_at >= started'"""
    ).fetchall()
    assert {name for name, _ in bounded} >= {
        "private.set_response_category()",
        "private.session_question_list(uuid,integer)",
        "private.serve_questions(uuid,uuid,jsonb,integer)",
    }
    assert [name for name, generic in bounded if not generic] == []


# Concurrency: two real connections; the second statement is started while the first transaction is open, is
# seen waiting on a lock, then the first commits.


@pytest.fixture
def committed(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def race(database_url: str, first: Callable[[psycopg.Connection], Any], second: Callable[[psycopg.Connection], Any]):
    """Run `first` in an open transaction, then `second` on another connection until it waits for a lock held by
    the first; commit the first; return what the second returned or raised."""
    outcome: dict[str, Any] = {}
    with psycopg.connect(database_url) as one, psycopg.connect(database_url) as two:
        one.execute("select 1")  # open the transactions, so that acting_as nests (and commits nothing)
        two.execute("select 1")
        first(one)
        pid = two.info.backend_pid

        def run_second() -> None:
            try:
                outcome["result"] = second(two)
                two.commit()
            except psycopg.Error as error:
                outcome["error"] = error
                two.rollback()

        thread = threading.Thread(target=run_second)
        thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            waiting = one.execute("select wait_event_type from pg_stat_activity where pid = %s", (pid,)).fetchone()
            if waiting and waiting[0] == "Lock":
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the second statement never waited for the first")
        one.commit()
        thread.join(10)
    return outcome


def test_a_question_is_never_served_twice_even_to_two_concurrent_serves(
    database_url: str, committed: psycopg.Connection
) -> None:
    data = populate_user(committed)
    question = add_question(committed)
    sessions = [
        committed.execute(
            "insert into public.practice_sessions (user_id, session_type) values (%s, 'quick') returning id",
            (data.user_id,),
        ).fetchone()[0]
        for _ in range(2)
    ]

    def serve(session: uuid.UUID) -> Callable[[psycopg.Connection], Any]:
        return lambda conn: conn.execute(
            "select service.serve_more_questions(%s, %s, %s, 1, %s)",
            (data.user_id, session, Jsonb({"category": "behavioral"}), Jsonb([str(question)])),
        ).fetchone()[0]

    outcome = race(database_url, serve(sessions[0]), serve(sessions[1]))

    assert "error" not in outcome
    served = committed.execute(
        "select session_id from public.session_questions where user_id = %s and question_id = %s",
        (data.user_id, question),
    ).fetchall()
    assert served == [(sessions[0],)]
    # Any other writer is held to it too.
    with pytest.raises(psycopg.errors.UniqueViolation):
        committed.execute(
            f"insert into public.session_questions (session_id, user_id, question_id, position)"
            f" values (%s, %s, %s, {NEXT_POSITION})",
            (sessions[1], data.user_id, question, sessions[1]),
        )


def test_a_served_question_is_answered_once_even_by_two_concurrent_answers(
    database_url: str, committed: psycopg.Connection
) -> None:
    data = populate_user(committed)
    question = add_question(committed)
    served = committed.execute(
        f"insert into public.session_questions (session_id, user_id, question_id, position)"
        f" values (%s, %s, %s, {NEXT_POSITION}) returning id",
        (data.session_id, data.user_id, question, data.session_id),
    ).fetchone()[0]

    def answer(text: str) -> Callable[[psycopg.Connection], Any]:
        def insert(conn: psycopg.Connection) -> Any:
            with acting_as(conn, user_claims(data.user_id)):
                return conn.execute(
                    "insert into public.responses (session_id, session_question_id, user_id, answer_text)"
                    " values (%s, %s, %s, %s) returning id",
                    (data.session_id, served, data.user_id, text),
                ).fetchone()[0]

        return insert

    outcome = race(database_url, answer("first"), answer("second"))

    assert isinstance(outcome.get("error"), psycopg.errors.UniqueViolation)
    assert "already answered" in outcome["error"].diag.message_primary
    assert committed.execute(
        "select answer_text from public.responses where session_question_id = %s", (served,)
    ).fetchall() == [("first",)]
    assert committed.execute(
        "select r.id = s.response_id from public.served_questions s join public.responses r"
        " on r.session_question_id = s.session_question_id where s.session_question_id = %s",
        (served,),
    ).fetchone() == (True,)


CONVERTING = "20261204000017"
PREVIOUS = "20261204000016"

TABLES = {  # old table -> the table its rows are in after migration 17 (same names, same columns)
    "public.session_questions": "public.session_questions",
    "public.responses": "public.responses",
    "public.ai_usage": "public.ai_usage",
    "archive.responses": "archive.responses",
}


def census(conn: psycopg.Connection) -> dict[str, tuple[int, int]]:
    """Rows and a checksum of every row's text, per table."""
    return {
        table: conn.execute(
            f"select count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) from {table} t"  # type: ignore[arg-type]
        ).fetchone()
        for table in TABLES
    }


def test_the_converting_migration_keeps_every_row_and_its_rollback_too(server_url: str) -> None:
    with localdb.scratch_database(server_url) as url, psycopg.connect(url, autocommit=True) as conn:
        migrations.apply_stand_in(conn)
        list(migrations.migrate(conn, to_version=PREVIOUS))
        migrations.seed(conn)
        users = [populate_user(conn) for _ in range(4)]
        # Answers and AI calls spread over 12 months, the oldest archived row by row as before 17.
        for months_back, user in enumerate(users * 3):
            question = add_question(conn)
            served = conn.execute(
                f"insert into public.session_questions (session_id, user_id, question_id, position, served_at)"
                f" values (%s, %s, %s, {NEXT_POSITION}, now() - make_interval(months => %s)) returning id",
                (user.session_id, user.user_id, question, user.session_id, months_back),
            ).fetchone()[0]
            conn.execute(
                "insert into public.responses (session_id, session_question_id, user_id, answer_text, created_at)"
                " values (%s, %s, %s, %s, now() - make_interval(months => %s))",
                (user.session_id, served, user.user_id, f"answer {months_back}", months_back),
            )
            conn.execute(
                "insert into public.ai_usage (user_id, purpose, model, latency_ms, succeeded, created_at)"
                " values (%s, 'evaluation', 'm', %s, true, now() - make_interval(months => %s))",
                (user.user_id, months_back, months_back),
            )
        conn.execute(
            "with moved as (delete from public.responses where created_at < now() - interval '9 months' returning *)"
            " insert into archive.responses select * from moved"
        )
        before = census(conn)
        assert before["archive.responses"][0] == 3  # 9, 10 and 11 months old
        assert before["public.responses"][0] == 4 + 12 - 3

        assert [m.version for m in migrations.migrate(conn, to_version=CONVERTING)] == [CONVERTING]
        assert census(conn) == before
        kinds = conn.execute(
            "select array_agg(distinct relkind) from pg_class where oid = any(%s::regclass[])", (list(TABLES),)
        )
        assert kinds.fetchone() == (["p"],)
        # Each row sits in its month's partition, and the ledger knows every served question and its answer.
        assert conn.execute(
            "select count(*) from public.responses r"
            " where tableoid::regclass::text"
            "  <> 'private.responses_p' || to_char(r.created_at at time zone 'UTC', 'YYYYMM')"
        ).fetchone() == (0,)
        assert (
            conn.execute("select count(*), count(response_id) from public.served_questions").fetchone()
            == conn.execute(
                "select (select count(*) from public.session_questions),"
                " (select count(*) from public.responses) + (select count(*) from archive.responses)"
            ).fetchone()
        )

        list(migrations.rollback(conn, steps=1))
        assert census(conn) == before
        assert conn.execute("select relkind from pg_class where oid = 'public.responses'::regclass").fetchone() == (
            "r",
        )


def test_the_users_history_reads_sent_as_postgrest_sends_them_keep_a_generic_plan(db: psycopg.Connection) -> None:
    """A user's latest answers and session summaries read every month (neither filters on the partition key), so
    planning them costs per partition. PostgREST prepares its statements: after five custom plans the generic one
    is kept, and no request plans them again (bench/partitioning.py's RLS read figure rests on it)."""
    user = populate_user(db).user_id
    reads = {
        "responses": postgrest.read("responses", [("user_id", "=")], "created_at", 20),
        "session_summaries": postgrest.read("session_summaries", [("user_id", "=")], "started_at", 10),
    }
    for _ in range(8):
        with acting_as(db, user_claims(user)):
            rows = {table: db.execute(read, (str(user),), prepare=True).fetchone()[1] for table, read in reads.items()}
    assert rows["responses"] > 0
    assert rows["session_summaries"] > 0
    for table in reads:
        plans = db.execute(
            "select custom_plans, generic_plans from pg_prepared_statements where statement like %s",
            (f'WITH pgrst_source AS ( SELECT "public"."{table}"%',),
        ).fetchone()
        assert plans == (5, 3), table


def test_a_users_latest_answers_read_the_newest_month_first_and_stop(db: psycopg.Connection) -> None:
    """Migration 33: with catch-all ranges instead of a default partition the months are ordered, so the generic
    plan of `order by created_at desc limit n` is an Append from the newest month down that stops once it has n
    rows, not a Merge Append starting an index scan in every month."""
    user = populate_user(db).user_id
    this_month = db.execute("select date_trunc('month', now() at time zone 'UTC')::date").fetchone()[0]
    db.execute("select private.create_month_partition('public.responses', %s::date - 90)", (this_month,))
    read = postgrest.read("responses", [("user_id", "=")], "created_at", 1).as_string(db).replace("%s", "$1")
    db.execute(f"prepare latest_answer (uuid) as {read}")  # type: ignore[arg-type]
    db.execute("set local plan_cache_mode = force_generic_plan")
    with acting_as(db, user_claims(user)):
        plan = "\n".join(
            row[0]
            for row in db.execute(
                f"explain (analyze, costs off, timing off, summary off) execute latest_answer('{user}')"  # type: ignore[arg-type]
            )
        )
    assert "Merge Append" not in plan
    scans = [line for line in plan.splitlines() if "Index Scan" in line]
    scanned = [line.split(" on ")[1].split()[0] for line in scans]
    assert scanned[0] == "responses_after", plan
    assert scanned[1:] == sorted(scanned[1:], reverse=True), "the months newest first"
    newest_answered = scanned.index(f"responses_p{this_month:%Y%m}")
    assert all("(never executed)" in line for line in scans[newest_answered + 1 :]), plan
    assert "(never executed)" not in scans[newest_answered]


CATCH_ALLS = "20261205000033"


def test_replacing_the_default_partitions_refuses_while_one_holds_rows_and_its_rollback_restores_them(
    server_url: str,
) -> None:
    with localdb.scratch_database(server_url) as url, psycopg.connect(url, autocommit=True) as conn:
        migrations.apply_stand_in(conn)
        versions = [m.version for m in migrations.local_migrations()]
        list(migrations.migrate(conn, to_version=versions[versions.index(CATCH_ALLS) - 1]))
        user = populate_user(conn).user_id
        conn.execute(
            "insert into public.ai_usage (user_id, purpose, model, latency_ms, succeeded, created_at)"
            " values (%s, 'evaluation', 'm', 1, true, '2040-01-01 00:00+00')",
            (user,),
        )
        with pytest.raises(migrations.MigrationError) as refused:
            list(migrations.migrate(conn, to_version=CATCH_ALLS))
        assert "private.ai_usage_default holds 1 row(s)" in str(refused.value)
        assert CATCH_ALLS not in migrations.applied_versions(conn)
        assert partition_of(conn, "public.ai_usage", "2040-01-01 00:00+00") == "private.ai_usage_default"

        conn.execute("delete from public.ai_usage where created_at = '2040-01-01 00:00+00'")
        assert [m.version for m in migrations.migrate(conn, to_version=CATCH_ALLS)] == [CATCH_ALLS]
        assert conn.execute("select to_regclass('private.ai_usage_default')").fetchone() == (None,)
        assert conn.execute("select to_regclass('private.ai_usage_after')").fetchone() == ("private.ai_usage_after",)

        list(migrations.rollback(conn, steps=1))
        assert conn.execute("select to_regclass('private.ai_usage_after')").fetchone() == (None,)
        conn.execute(
            "insert into public.ai_usage (user_id, purpose, model, latency_ms, succeeded, created_at)"
            " values (%s, 'evaluation', 'm', 1, true, '2040-01-01 00:00+00')",
            (user,),
        )
        assert partition_of(conn, "public.ai_usage", "2040-01-01 00:00+00") == "private.ai_usage_default"


def test_the_operators_way_to_rows_in_a_catch_all_puts_them_in_their_months(server_url: str) -> None:
    """docs/operations.md's procedure for the alert rows_in_catch_all_partition, run as written there."""
    guide = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    procedure = guide[guide.index("- **Alert `rows_in_catch_all_partition`**") :]
    procedure = procedure[procedure.index("```sql") + len("```sql") : procedure.index("```\n")]
    with localdb.scratch_database(server_url) as url, psycopg.connect(url, autocommit=True) as conn:
        migrations.apply_stand_in(conn)
        list(migrations.migrate(conn))
        user = populate_user(conn).user_id
        strays = ("2031-08-02 00:00+00", "2031-11-30 23:00+00")
        for at in strays:
            conn.execute(
                "insert into public.ai_usage (user_id, purpose, model, latency_ms, succeeded, created_at)"
                " values (%s, 'evaluation', 'm', 1, true, %s)",
                (user, at),
            )
        conn.execute("select service.run_maintenance()")
        assert open_alerts(conn).keys() == {"public.ai_usage"}

        conn.execute(procedure)  # type: ignore[arg-type]

        assert [partition_of(conn, "public.ai_usage", at) for at in strays] == [
            "private.ai_usage_p203108",
            "private.ai_usage_p203111",
        ]
        conn.execute("select service.run_maintenance()")
        assert open_alerts(conn) == {}
        assert conn.execute("select to_regclass('private.ai_usage_strays')").fetchone() == (None,)
