"""Fixtures of the backup tests: a migrated database holding a little of everything, to back up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import psycopg
import pytest

from functions.analytics.retention import run_retention
from prep import localdb
from tests.analytics.history import practise, practitioner
from tests.support.identities import sign_up

# A month ahead of every month the migrations make: only the maintenance would have made it.
RUN_TIME_MONTH = "2031-05-10 10:00+00"
# A month of history that retention moves to the archive.
ARCHIVED_MONTH = date(2025, 1, 1)

# Every table whose content a restore must reproduce: the app's schemas, and the users in auth.
CONTENT_QUERY = """
select format('%I.%I', n.nspname, c.relname)
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'r' and n.nspname in ('public', 'private', 'service', 'archive', 'auth', 'storage')
order by 1
"""


def months_since(month: date) -> int:
    today = datetime.now(UTC).date()
    return (today.year - month.year) * 12 + today.month - month.month


def content(url: str) -> dict[str, str]:
    """Each table's rows, as one digest per table (order-independent), plus the migration history."""
    with psycopg.connect(url) as conn:
        tables = [row[0] for row in conn.execute(CONTENT_QUERY)]
        digests = {
            table: conn.execute(
                f"select count(*) || ':' || coalesce(md5(string_agg(t::text, '|' order by t::text)), '')"  # type: ignore[arg-type]
                f" from {table} t"
            ).fetchone()[0]
            for table in tables
        }
        digests["history"] = str(
            conn.execute(
                "select array_agg(row(version, name, statements) order by version)"
                " from supabase_migrations.schema_migrations"
            ).fetchone()[0]
        )
    return digests


@pytest.fixture(scope="session")
def source_url(server_url: str, template_db: str) -> Iterator[str]:
    """A migrated, seeded database with users, a changed plan, a session, and partitions made at run time (months
    of answers before the migrations' and far ahead of them): what a backup must carry."""
    with localdb.scratch_database(server_url, template=template_db) as url:
        with psycopg.connect(url) as conn:
            for n in range(3):
                sign_up(conn, email=f"backup-{n}@example.test")
            conn.execute("update public.plans set stripe_price_id = 'price_backup_test' where code = 'weekly'")
            user = practitioner(conn)
            practise(conn, user, f"{ARCHIVED_MONTH:%Y-%m}-15 10:00+00", [70])
            practise(conn, user, RUN_TIME_MONTH, [80])
        # January 2025 leaves for the archive, as retention moves a month: a month of the archive made at run time.
        run_retention(url, as_of=datetime.now(UTC), keep_months=months_since(ARCHIVED_MONTH) - 1, ai_usage_months=120)
        yield url


@pytest.fixture
def empty_url(server_url: str) -> Iterator[str]:
    with localdb.scratch_database(server_url, prefix="prep_test_restore") as url:
        yield url
