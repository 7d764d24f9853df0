"""Where the benchmarks run: a dedicated database, never one that holds anything else."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from prep import migrations
from prep.localdb import EmbeddedPostgres
from prep.migrations import MIGRATIONS_DIR, SEEDS_DIR, STAND_IN_FILE

BENCH_DB = "prep_bench"
# Written in the database's comment by generate_volume: a database without it was not made by the benchmark
# and is never dropped or filled.
MARKER_KEY = "prep_bench"


def server_url() -> str:
    """DATABASE_URL's server, else the embedded scratch cluster (started if down), whose WAL is never archived:
    benchmarks write tens of gigabytes of it."""
    return os.environ.get("DATABASE_URL") or EmbeddedPostgres.scratch().start()


def bench_url(database_url: str | None = None) -> str:
    """--database-url when given, else `prep_bench` on the benchmark server (server_url)."""
    if database_url:
        return database_url
    return make_conninfo(server_url(), dbname=BENCH_DB)


def maintenance_url(url: str) -> str:
    """A connection to the same server for create/drop database (which cannot run in the target itself)."""
    return make_conninfo(url, dbname="postgres")


def dbname(url: str) -> str:
    return str(conninfo_to_dict(url)["dbname"])


def describe(url: str) -> str:
    """host:port/dbname, without the password a conninfo string carries."""
    parts = conninfo_to_dict(url)
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts['dbname']}"


def schema_files() -> dict[str, str]:
    """What the schema is built from (stand-in, migrations, seeds), each file's name and content digest."""
    paths = [STAND_IN_FILE, *sorted(MIGRATIONS_DIR.glob("*.sql")), *sorted(SEEDS_DIR.glob("*.sql"))]
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:16] for path in paths}


def schema_state(marker: dict[str, Any]) -> str:
    """'current'; 'behind' when migrations were only added since the data was generated (migrating forward
    brings it up to date); 'stale' when a file it was built from changed or went away (the data must be
    generated again)."""
    built_from: dict[str, str] = marker.get("schema_files", {})
    now = schema_files()
    if built_from == now:
        return "current"
    added = set(now) - set(built_from)
    unchanged = all(now.get(name) == digest for name, digest in built_from.items())
    if built_from and unchanged and all(name in {m.path.name for m in migrations.local_migrations()} for name in added):
        return "behind"
    return "stale"


def read_marker(conn: psycopg.Connection, name: str) -> dict[str, Any] | None:
    """The benchmark marker of database `name`: None if it does not exist, {} if it is not a benchmark one."""
    row = conn.execute(
        "select shobj_description(oid, 'pg_database') from pg_database where datname = %s", (name,)
    ).fetchone()
    if row is None:
        return None
    try:
        comment = json.loads(row[0] or "")
    except json.JSONDecodeError:
        return {}
    return comment.get(MARKER_KEY, {}) if isinstance(comment, dict) else {}


def write_marker(conn: psycopg.Connection, name: str, marker: dict[str, Any]) -> None:
    comment = json.dumps({MARKER_KEY: marker})
    conn.execute(sql.SQL("comment on database {} is {}").format(sql.Identifier(name), sql.Literal(comment)))


def fresh_scratch_database(name: str, benchmark: str) -> str:
    """Drop and recreate `name` on the benchmark server, migrated and seeded; return its URL.

    Only a database this benchmark made (its marker says so) is ever dropped.
    """
    server = server_url()
    with psycopg.connect(server, autocommit=True) as admin:
        marker = read_marker(admin, name)
        if marker is not None:
            if marker.get("benchmark") != benchmark:
                raise SystemExit(f"database {name} exists and was not made by {benchmark}; refusing to drop it")
            admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        write_marker(admin, name, {"benchmark": benchmark, "state": "building"})
    url = make_conninfo(server, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        migrations.build(conn)
    return url


def answer_and_rate(
    conn: psycopg.Connection, claims: str, session: str, served_id: str, user: str, question: str
) -> None:
    """One user's ordinary write, as PostgREST runs it (role and claims in one transaction): answer a served
    question and rate it. The load whose latency the benchmarks watch while something else runs."""
    with conn.transaction():
        conn.execute(
            "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)", (claims,)
        )
        conn.execute(
            "insert into public.responses (session_id, session_question_id, user_id, answer_text)"
            " values (%s, %s, %s, 'A concise answer with one example.')",
            (session, served_id, user),
        )
        conn.execute(
            "insert into public.question_ratings (user_id, question_id, rating) values (%s, %s, 5)"
            " on conflict (user_id, question_id) do update set rating = excluded.rating",
            (user, question),
        )
