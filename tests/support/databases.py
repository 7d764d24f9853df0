"""Scratch databases for tests: one migrated template per run, cheap copies of it per test module or test."""

from __future__ import annotations

import os

import psycopg
from psycopg.conninfo import conninfo_to_dict

from prep import migrations
from prep.localdb import EmbeddedPostgres


def server_url() -> str:
    """The server tests create their databases on: DATABASE_URL's, or the embedded one."""
    return os.environ.get("DATABASE_URL") or EmbeddedPostgres().start()


def build_schema(url: str, *, seed: bool = True) -> None:
    """Stand-in, every migration, and the seed: what `prep db up` does."""
    with psycopg.connect(url, autocommit=True) as conn:
        migrations.build(conn, with_seed=seed)


def dbname(url: str) -> str:
    return conninfo_to_dict(url)["dbname"]  # type: ignore[return-value]
