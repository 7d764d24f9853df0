"""Deleting every recording under a user's folder of the `answers` bucket.

Supabase Storage: objects are listed one folder level at a time (`POST /storage/v1/object/list/answers`, folders come
back with a null id) and deleted in batches of up to 1,000 names (`DELETE /storage/v1/object/answers` with
{"prefixes": [...]}), with the service key. The folder is listed again until it is empty, so an object uploaded
during the deletion goes too. Locally, recordings are files under <dir>/answers/<user_id>/.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Protocol

import httpx

BUCKET = "answers"
PAGE = 1000
# Upload policies allow names of at most three segments below the user's folder (migration 13).
MAX_DEPTH = 3


class StorageStepError(Exception):
    """Storage failed or refused; the step is retried later."""


class RecordingStore(Protocol):
    def delete_folder(self, user_id: str) -> int:
        """Delete every object under `<user_id>/`; return how many were deleted."""
        ...


class SupabaseRecordings:
    def __init__(self, url: str, service_key: str, *, timeout: float, http_client: httpx.Client | None = None) -> None:
        self._base = f"{url.rstrip('/')}/storage/v1/object"
        self._headers = {"authorization": f"Bearer {service_key}", "apikey": service_key}
        self._http = http_client or httpx.Client(timeout=timeout)

    def delete_folder(self, user_id: str) -> int:
        deleted = 0
        while names := self._names(f"{user_id}/", MAX_DEPTH):
            for start in range(0, len(names), PAGE):
                self._request("DELETE", f"{self._base}/{BUCKET}", {"prefixes": names[start : start + PAGE]})
            deleted += len(names)
        return deleted

    def _names(self, folder: str, depth: int) -> list[str]:
        names: list[str] = []
        offset = 0
        while True:
            entries = self._request(
                "POST",
                f"{self._base}/list/{BUCKET}",
                {"prefix": folder, "limit": PAGE, "offset": offset, "sortBy": {"column": "name", "order": "asc"}},
            )
            if not isinstance(entries, list):
                raise StorageStepError("storage listed the folder in an unexpected shape")
            for entry in entries:
                if entry.get("id") is not None:
                    names.append(folder + entry["name"])
                elif depth > 1:
                    names.extend(self._names(f"{folder}{entry['name']}/", depth - 1))
            if len(entries) < PAGE:
                return names
            offset += PAGE

    def _request(self, method: str, url: str, body: dict[str, Any]) -> Any:
        try:
            response = self._http.request(method, url, json=body, headers=self._headers)
        except httpx.HTTPError as error:
            raise StorageStepError(f"storage did not answer: {type(error).__name__}") from error
        if response.status_code != 200:
            raise StorageStepError(f"storage answered HTTP {response.status_code}: {response.text[:200]}")
        return response.json()


class LocalRecordings:
    """Recordings as files at <root>/answers/<user_id>/..., for local runs."""

    def __init__(self, root: Path) -> None:
        self._bucket = (root / BUCKET).resolve()

    def delete_folder(self, user_id: str) -> int:
        folder = (self._bucket / user_id).resolve()
        if folder.parent != self._bucket:
            raise StorageStepError(f"the folder of {user_id!r} leaves the bucket")
        if not folder.exists():
            return 0
        count = sum(1 for path in folder.rglob("*") if path.is_file())
        try:
            shutil.rmtree(folder)
        except OSError as error:
            raise StorageStepError(f"could not delete the recordings: {error.strerror}") from error
        return count
