"""Reading recorded answers: Supabase Storage over HTTP with the service key, or a local directory.

Recordings live in the private `answers` bucket under the owner's folder (`<user_id>/...`). A recording
that is not there is a permanent failure (AudioMissingError); storage that cannot be reached, or refuses the
service key, is transient (StorageUnavailableError), since an operator can fix it and the message be retried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import httpx

from functions.evaluation.settings import StorageSettings

BUCKET = "answers"


class StorageUnavailableError(Exception):
    """Storage could not be reached or refused the service; retrying later may help."""


class AudioMissingError(Exception):
    """The recording is not in storage (never uploaded, or deleted)."""


class AudioTooLargeError(Exception):
    """The recording exceeds what transcription accepts."""


class AudioStorage(Protocol):
    def read(self, path: str) -> bytes:
        """The object at `path` in the answers bucket."""
        ...


class SupabaseStorage:
    def __init__(
        self, url: str, service_key: str, *, timeout: float, max_bytes: int, http_client: httpx.Client | None = None
    ) -> None:
        self._base = f"{url.rstrip('/')}/storage/v1/object/{BUCKET}"
        self._headers = {"authorization": f"Bearer {service_key}", "apikey": service_key}
        self._max_bytes = max_bytes
        self._http = http_client or httpx.Client(timeout=timeout)

    def read(self, path: str) -> bytes:
        url = f"{self._base}/{quote(path, safe='/')}"
        try:
            with self._http.stream("GET", url, headers=self._headers) as response:
                if response.status_code == 200:
                    return self._body(response, path)
                detail = response.read().decode("utf-8", errors="replace")[:200]
        except httpx.HTTPError as error:
            raise StorageUnavailableError(f"storage did not answer: {type(error).__name__}") from error
        status = response.status_code
        # Storage has answered a missing object both as 404 and as 400 {"statusCode": "404", "error": "not_found"}.
        if status == 404 or (status == 400 and "not_found" in detail.replace(" ", "_").lower()):
            raise AudioMissingError(f"the recording {path} is not in storage")
        if status in (401, 403):
            raise StorageUnavailableError(
                f"storage refused the service key (HTTP {status}); check SUPABASE_SERVICE_ROLE_KEY"
            )
        raise StorageUnavailableError(f"storage answered HTTP {status}: {detail}")

    def _body(self, response: httpx.Response, path: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                raise AudioTooLargeError(f"the recording {path} is larger than {self._max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


class LocalStorage:
    """Objects as files at <root>/<bucket>/<path>, for local runs and tests."""

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self._bucket = (root / BUCKET).resolve()
        self._max_bytes = max_bytes

    def read(self, path: str) -> bytes:
        file = (self._bucket / path).resolve()
        if not file.is_relative_to(self._bucket):
            raise AudioMissingError(f"the recording path {path!r} leaves the bucket")
        try:
            if file.stat().st_size > self._max_bytes:
                raise AudioTooLargeError(f"the recording {path} is larger than {self._max_bytes} bytes")
            return file.read_bytes()
        except FileNotFoundError:
            raise AudioMissingError(f"the recording {path} is not in storage") from None
        except OSError as error:
            raise StorageUnavailableError(f"could not read the recording: {error.strerror}") from error


def storage_from(settings: StorageSettings) -> AudioStorage:
    if settings.local_storage_dir is not None:
        return LocalStorage(settings.local_storage_dir, max_bytes=settings.max_audio_bytes)
    # StorageSettings refuses to load without these when there is no local directory.
    assert settings.supabase_url is not None
    assert settings.supabase_service_role_key is not None
    return SupabaseStorage(
        str(settings.supabase_url),
        settings.supabase_service_role_key.get_secret_value(),
        timeout=settings.storage_timeout_seconds,
        max_bytes=settings.max_audio_bytes,
    )
