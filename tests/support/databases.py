"""Scratch databases for tests: one migrated template per run, cheap copies of it per test module or test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict

from prep import migrations
from prep.localdb import EmbeddedPostgres


@contextmanager
def server_for_tests(embedded: EmbeddedPostgres | None = None) -> Iterator[str]:
    """The server tests create their databases on: DATABASE_URL's, or the embedded scratch cluster (never the
    archived one `make run` uses), which is stopped afterwards if it was started for them."""
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    server = embedded or EmbeddedPostgres.scratch()
    started_here = not server.is_running()
    url = server.start()
    try:
        yield url
    finally:
        if started_here:
            server.stop()


def build_schema(url: str, *, seed: bool = True) -> None:
    """Stand-in, every migration, and the seed: what `prep db up` does."""
    with psycopg.connect(url, autocommit=True) as conn:
        migrations.build(conn, with_seed=seed)


def dbname(url: str) -> str:
    return conninfo_to_dict(url)["dbname"]  # type: ignore[return-value]
