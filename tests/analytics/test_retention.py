"""Retention by partition: a month of answers past the window leaves public.responses whole (detached
concurrently) for archive.responses, where its owner still reads it and account deletion still removes it; an
interrupted run is finished by the next one."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from functions.analytics.retention import run_retention
from shared.db import DatabaseError
from shared.db.rls import acting_as
from tests.analytics.history import practise, practitioner
from tests.support.identities import user_claims

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    """Committed as it goes: detaching concurrently needs data other transactions can see."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        for month in ("2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01", "2026-12-01", "2027-01-01"):
            connection.execute("select private.create_month_partition('public.responses', %s)", (month,))
        yield connection


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


def test_a_month_past_the_window_moves_whole_to_the_archive(database_url: str, conn: psycopg.Connection) -> None:
    user, stranger = practitioner(conn), practitioner(conn)
    old = practise(conn, user, "2025-01-15 10:00+00", [80, 60])
    kept = practise(conn, user, "2025-03-02 10:00+00", [90], category="technical")
    with acting_as(conn, user_claims(user)):
        before = conn.execute("select * from public.response_history order by id").fetchall()
    assert {where(conn, r) for r in answers(conn, old)} == {"private.responses_p202501"}

    result = run_retention(database_url, as_of=NOW, keep_months=21)  # February 2025 and older

    assert result["archived_months"] == ["archive.responses_p202501", "archive.responses_p202502"]
    assert {where(conn, r) for r in answers(conn, old)} == {"archive.responses_p202501"}
    assert {where(conn, r) for r in answers(conn, kept)} == {"private.responses_p202503"}
    assert conn.execute("select to_regclass('private.responses_p202501')").fetchone() == (None,)
    assert is_partition_of(conn, "archive.responses_p202501", "archive.responses")
    assert is_partition_of(conn, "private.responses_default", "public.responses"), "the default is back"
    with acting_as(conn, user_claims(user)):
        assert conn.execute("select * from public.response_history order by id").fetchall() == before
        assert conn.execute("select answered_count from public.session_summaries where id = %s", (old,)).fetchone() == (
            2,
        )
    with acting_as(conn, user_claims(stranger)):
        assert conn.execute("select count(*) from public.response_history").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("select count(*) from archive.responses_p202501")
    # Only the archive's own indexes are kept on the archived month.
    indexes = conn.execute(
        "select count(*) from pg_index i where i.indrelid = 'archive.responses_p202501'::regclass"
        " and not exists (select from pg_inherits h where h.inhrelid = i.indexrelid)"
    ).fetchone()
    assert indexes == (0,)

    assert run_retention(database_url, as_of=NOW, keep_months=21)["archived_months"] == []

    # Deleting the account still removes what was archived.
    conn.execute("update public.subscriptions set status = 'canceled' where user_id = %s", (user,))
    conn.execute("delete from auth.users where id = %s", (user,))
    assert conn.execute("select count(*) from archive.responses where user_id = %s", (user,)).fetchone() == (0,)


def test_an_interrupted_run_is_finished_by_the_next(database_url: str, conn: psycopg.Connection) -> None:
    user = practitioner(conn)
    session = practise(conn, user, "2025-03-20 10:00+00", [70])
    # Stopped after detaching the default and the month, before attaching the default again and archiving.
    conn.execute("alter table public.responses detach partition private.responses_default")
    conn.execute("alter table public.responses detach partition private.responses_p202503")

    result = run_retention(database_url, as_of=NOW, keep_months=20)

    assert result["archived_months"] == ["archive.responses_p202503"]
    assert {where(conn, r) for r in answers(conn, session)} == {"archive.responses_p202503"}
    assert is_partition_of(conn, "private.responses_default", "public.responses")


def test_a_detach_cancelled_half_way_is_finalized(database_url: str, conn: psycopg.Connection) -> None:
    user = practitioner(conn)
    session = practise(conn, user, "2025-04-20 10:00+00", [75])
    conn.execute("alter table public.responses detach partition private.responses_default")
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

    assert result["archived_months"] == ["archive.responses_p202504"]
    assert {where(conn, r) for r in answers(conn, session)} == {"archive.responses_p202504"}
    assert is_partition_of(conn, "private.responses_default", "public.responses")


def test_nothing_is_detached_while_next_month_has_no_partition(database_url: str, conn: psycopg.Connection) -> None:
    result = run_retention(database_url, as_of=datetime(2035, 1, 10, tzinfo=UTC), keep_months=1)
    assert result == {"archived_months": [], "skipped": "this month or the next has no partition yet"}
    assert is_partition_of(conn, "private.responses_p202612", "public.responses")
    assert is_partition_of(conn, "private.responses_default", "public.responses")


def test_the_window_is_bounded(database_url: str) -> None:
    with pytest.raises(DatabaseError) as refused:
        run_retention(database_url, as_of=NOW, keep_months=0)
    assert refused.value.status == 422
