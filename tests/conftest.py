"""Tests run against a real PostgreSQL: the migrated schema with its roles, grants and policies.

One template database is built per run (stand-in, migrations, seed); each test module gets a copy of it,
and each test runs inside a transaction that is rolled back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from prep import localdb
from tests.support import databases
from tests.support.dataset import make_month


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    with databases.server_for_tests() as url:
        yield url


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    name = f"prep_test_template_{uuid.uuid4().hex[:12]}"
    url = localdb.create_database(server_url, name)
    try:
        databases.build_schema(url)
        with psycopg.connect(url, autocommit=True) as conn:
            # Last month's partitions, as every database older than a month has them: a test writing yesterday's
            # rows on the 1st of a month finds one (migration 33: a row older than the oldest month has none).
            make_month(conn, datetime.now(UTC).replace(day=1) - timedelta(days=1))
        yield name
    finally:
        localdb.drop_database(server_url, name)


@pytest.fixture(scope="module")
def database_url(server_url: str, template_db: str) -> Iterator[str]:
    with localdb.scratch_database(server_url, template=template_db) as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """A connection as the migrating superuser, inside a transaction rolled back after the test."""
    with psycopg.connect(database_url) as conn:
        yield conn
        conn.rollback()


@pytest.fixture
def in_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as the deployed functions do: logs as JSON lines, metrics written (shared.metrics emits only in Lambda)."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "interview-prep-test-function")
    monkeypatch.setenv("METRICS_NAMESPACE", "interview-prep/test")
