"""Scratch databases for tests: one migrated template per run, cheap copies of it per test module or test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from prep import migrations
from prep.localdb import EmbeddedPostgres


def server_url() -> str:
    """The server tests create their databases on: DATABASE_URL's, or the embedded one."""
    return os.environ.get("DATABASE_URL") or EmbeddedPostgres().start()


def url_for(server: str, dbname: str) -> str:
    return make_conninfo(server, dbname=dbname)


def create_database(server: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        template_clause = f" template {template}" if template else ""
        conn.execute(f'create database "{name}"{template_clause}')  # type: ignore[arg-type]
    return url_for(server, name)


def drop_database(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')  # type: ignore[arg-type]


def build_schema(url: str, *, seed: bool = True) -> None:
    """Stand-in, every migration, and the seed: what `prep db up` does."""
    with psycopg.connect(url, autocommit=True) as conn:
        migrations.build(conn, with_seed=seed)


@contextmanager
def scratch_database(server: str, template: str | None = None, prefix: str = "prep_test") -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = create_database(server, name, template)
    try:
        yield url
    finally:
        drop_database(server, name)


def dbname(url: str) -> str:
    return conninfo_to_dict(url)["dbname"]  # type: ignore[return-value]
