"""Calls over a direct PostgreSQL connection (psycopg), pooled per process and opened on first use."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from shared.config import ConfigurationError, DatabaseSettings
from shared.db import SERVICE_CLAIMS, Caller, error_for_sqlstate, unavailable
from shared.db.rls import acting_as


class PsycopgDatabase:
    def __init__(
        self, settings: DatabaseSettings, *, url: str | None = None, pool_timeout: float | None = None
    ) -> None:
        """The server at DATABASE_URL, or at `url` (a read replica); `pool_timeout` overrides DB_TIMEOUT_SECONDS
        as the longest wait for a connection."""
        url = url or (settings.database_url.get_secret_value() if settings.database_url else None)
        if url is None:
            raise ConfigurationError("the psycopg transport needs DATABASE_URL")
        self._url = url
        self._settings = settings
        self._pool_timeout = pool_timeout or settings.db_timeout_seconds
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    def _connections(self) -> ConnectionPool:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    pool = ConnectionPool(
                        self._url,
                        min_size=1,
                        max_size=self._settings.db_pool_size,
                        timeout=self._pool_timeout,
                        kwargs={
                            "autocommit": True,
                            "prepare_threshold": None,  # the transaction pooler cannot keep prepared statements
                            "connect_timeout": max(1, int(self._pool_timeout)),
                        },
                        check=ConnectionPool.check_connection,  # a thawed Lambda may hold a dead connection
                        open=False,
                    )
                    pool.open(wait=False)
                    # Published only once open: other threads read _pool without the lock.
                    self._pool = pool
        return self._pool

    def call(self, function: str, args: Mapping[str, Any] | None = None, *, caller: Caller | None = None) -> Any:
        with self.connection() as conn:
            return self.call_on(conn, function, args, caller=caller)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection for a few statements; any failure in the block comes out as a DatabaseError."""
        try:
            with self._connections().connection() as conn:
                yield conn
        except PoolTimeout as error:
            raise unavailable(f"no database connection within {self._pool_timeout:g}s") from error
        except psycopg.OperationalError as error:
            if error.sqlstate:
                raise error_for_sqlstate(error.sqlstate, _primary(error), _hint(error)) from error
            raise unavailable(str(error).strip().splitlines()[0]) from error
        except psycopg.Error as error:
            raise error_for_sqlstate(error.sqlstate, _primary(error), _hint(error)) from error

    def call_on(
        self,
        conn: psycopg.Connection,
        function: str,
        args: Mapping[str, Any] | None = None,
        *,
        caller: Caller | None = None,
    ) -> Any:
        """`call` on a connection of this database's pool (from `connection()`)."""
        schema, name = function.split(".")
        args = dict(args or {})
        query = sql.SQL("select {}.{}({})").format(
            sql.Identifier(schema),
            sql.Identifier(name),
            sql.SQL(", ").join(sql.SQL("{} => {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in args),
        )
        params = {k: Jsonb(v) if isinstance(v, dict | list) else v for k, v in args.items()}
        with acting_as(
            conn,
            caller.claims if caller else SERVICE_CLAIMS,
            statement_timeout_ms=self._settings.db_statement_timeout_ms,
        ):
            row = conn.execute(query, params).fetchone()
            return row[0] if row else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _primary(error: Any) -> str:
    return (error.diag.message_primary or str(error)).strip()


def _hint(error: Any) -> str | None:
    return error.diag.message_hint
