"""Calls over PostgREST's RPC endpoint, with the client library supabase-py is built on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from postgrest import SyncPostgrestClient
from postgrest.exceptions import APIError

from shared.config import ConfigurationError, DatabaseSettings
from shared.db import Caller, error_for_sqlstate, unavailable


class PostgrestDatabase:
    """PostgREST RPC: the service key for service calls, the user's own token for calls on their behalf."""

    def __init__(self, settings: DatabaseSettings, http_client: httpx.Client | None = None) -> None:
        if settings.supabase_url is None or settings.supabase_service_role_key is None:
            raise ConfigurationError("the postgrest transport needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
        self._base_url = f"{str(settings.supabase_url).rstrip('/')}/rest/v1"
        self._key = settings.supabase_service_role_key.get_secret_value()
        self._timeout = settings.db_timeout_seconds
        self._http = http_client

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=self._timeout)
        return self._http

    def call(self, function: str, args: Mapping[str, Any] | None = None, *, caller: Caller | None = None) -> Any:
        schema, name = function.split(".")
        token = caller.token if caller else self._key
        client = SyncPostgrestClient(
            self._base_url,
            schema=schema,
            headers={"apikey": self._key, "Authorization": f"Bearer {token}"},
            http_client=self._client(),
            retry_enabled=False,
        )
        try:
            return client.rpc(name, dict(args or {})).execute().data
        except APIError as error:
            raise error_for_sqlstate(error.code, error.message or "PostgREST refused the call", error.hint) from error
        except httpx.HTTPError as error:
            raise unavailable(f"PostgREST did not answer: {error}") from error
