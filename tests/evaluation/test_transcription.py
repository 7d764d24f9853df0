"""Spoken answers: the recording is read from storage, transcribed once, kept raw, and graded."""

from __future__ import annotations

import httpx
import pytest

from functions.evaluation.storage import (
    AudioMissingError,
    AudioTooLargeError,
    StorageUnavailableError,
    SupabaseStorage,
)
from tests.evaluation.graders import feature_grader
from tests.evaluation.harness import Harness
from tests.support.fake_openai import UploadedFile, server_error, transcript

SPOKEN = (
    "Um, so, at my last company I was responsible for the, uh, release process. Every Friday deploy failed, "
    "so I set up a canary stage and I wrote a rollback script. As a result failed deploys went from 6 a month "
    "to 1, and I learned to, you know, measure before changing anything."
)
AUDIO = b"RIFF....WEBM-fake-audio-bytes" * 100


def spoken_answer(harness: Harness, user: str, name: str = "answer.webm") -> str:
    path = f"{user}/{name}"
    harness.store_audio(path, AUDIO)
    response_id = harness.answer(user, None, audio_path=path, time_taken_seconds=75)
    harness.request(user, response_id)
    return response_id


def test_a_recording_is_transcribed_kept_raw_and_graded(harness: Harness) -> None:
    harness.fake.transcriptions.script(transcript(SPOKEN))
    harness.fake.chat.always(feature_grader())
    user = harness.user()
    response_id = spoken_answer(harness, user)

    assert harness.evaluate_now(response_id) == {"batchItemFailures": []}
    row = harness.row(response_id)
    assert row["evaluation_status"] == "completed"
    assert row["transcript"] == SPOKEN
    upload = harness.fake.transcriptions.last.body["file"]
    assert isinstance(upload, UploadedFile)
    assert (upload.filename, upload.content) == ("answer.webm", AUDIO)
    prompt = harness.fake.chat.last.text_of("user")
    assert f"<<<answer\n{SPOKEN}\n>>>answer" in prompt
    assert "spoken and transcribed automatically" in prompt
    usage = harness.conn.execute(
        "select purpose, audio_seconds, cost_usd > 0 as billed from public.ai_usage where user_id = %s"
        " order by created_at",
        (user,),
    ).fetchall()
    # Billed by the service's token count, not by the answer's time_taken_seconds (75), which the user writes.
    assert [(u["purpose"], u["audio_seconds"], u["billed"]) for u in usage] == [
        ("transcription", None, True),
        ("evaluation", None, True),
    ]


def test_a_retry_after_a_grading_failure_does_not_transcribe_again(harness: Harness) -> None:
    harness.fake.transcriptions.script(transcript(SPOKEN))
    harness.fake.chat.script(server_error(503), server_error(503)).always(feature_grader())
    user = harness.user()
    response_id = spoken_answer(harness, user)

    assert len(harness.evaluate_now(response_id)["batchItemFailures"]) == 1
    assert harness.row(response_id)["transcript"] == SPOKEN
    assert harness.evaluate_now(response_id) == {"batchItemFailures": []}
    assert harness.fake.transcriptions.calls == 1
    assert harness.row(response_id)["evaluation_status"] == "completed"


@pytest.mark.parametrize(
    ("stored", "audio_path", "reason"),
    [
        (None, "{user}/never-uploaded.webm", "is not in storage"),
        (b"", "{user}/empty.webm", "the recording is empty"),
    ],
    ids=["missing", "empty"],  # a path outside the owner's folder is refused when the answer is written
)
def test_an_unusable_recording_fails_without_retry(
    harness: Harness, stored: bytes | None, audio_path: str, reason: str
) -> None:
    user, other = harness.user(), harness.user()
    path = audio_path.format(user=user, other=other)
    harness.store_audio(f"{other}/answer.webm", AUDIO)
    if stored is not None:
        harness.store_audio(path, stored)
    response_id = harness.answer(user, None, audio_path=path)
    harness.request(user, response_id)

    assert harness.evaluate_now(response_id) == {"batchItemFailures": []}
    row = harness.row(response_id)
    assert row["evaluation_status"] == "failed"
    assert reason in row["evaluation_error"]
    assert harness.fake.calls == 0
    assert harness.charged(user) == 0


def test_silence_fails_with_a_reason(harness: Harness) -> None:
    harness.fake.transcriptions.script(transcript("   "))
    user = harness.user()
    response_id = spoken_answer(harness, user)
    assert harness.evaluate_now(response_id) == {"batchItemFailures": []}
    row = harness.row(response_id)
    assert (row["evaluation_status"], row["evaluation_error"]) == (
        "failed",
        "no speech was recognised in the recording",
    )
    assert harness.fake.chat.calls == 0


def test_a_written_note_and_a_recording_are_graded_together(harness: Harness) -> None:
    harness.fake.transcriptions.script(transcript(SPOKEN))
    harness.fake.chat.always(feature_grader())
    user = harness.user()
    path = f"{user}/with-notes.webm"
    harness.store_audio(path, AUDIO)
    response_id = harness.answer(user, "Notes: canary, rollback, 6 -> 1 failures.", audio_path=path)
    harness.request(user, response_id)
    harness.evaluate_now(response_id)
    prompt = harness.fake.chat.last.text_of("user")
    assert f"<<<answer\nNotes: canary, rollback, 6 -> 1 failures.\n\n{SPOKEN}\n>>>answer" in prompt


# Supabase Storage over HTTP, against a stand-in transport


def storage(handler: httpx.MockTransport, max_bytes: int = 1000) -> SupabaseStorage:
    return SupabaseStorage(
        "https://project.supabase.co/",
        "service-key",
        timeout=1,
        max_bytes=max_bytes,
        http_client=httpx.Client(transport=handler),
    )


def test_supabase_storage_downloads_with_the_service_key() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"audio")

    assert storage(httpx.MockTransport(answer)).read("u1/my answer.webm") == b"audio"
    [request] = seen
    assert str(request.url) == "https://project.supabase.co/storage/v1/object/answers/u1/my%20answer.webm"
    assert request.headers["authorization"] == "Bearer service-key"
    assert request.headers["apikey"] == "service-key"


@pytest.mark.parametrize(
    ("response", "error", "message"),
    [
        (httpx.Response(404, json={"error": "not_found"}), AudioMissingError, "not in storage"),
        (
            httpx.Response(400, json={"statusCode": "404", "error": "not_found", "message": "Object not found"}),
            AudioMissingError,
            "not in storage",
        ),
        (httpx.Response(403, json={"error": "Unauthorized"}), StorageUnavailableError, "SUPABASE_SERVICE_ROLE_KEY"),
        (httpx.Response(503, text="upstream down"), StorageUnavailableError, "HTTP 503"),
        (httpx.Response(200, content=b"x" * 1001), AudioTooLargeError, "larger than 1000 bytes"),
    ],
    ids=["404", "400-not-found", "403", "503", "too-large"],
)
def test_supabase_storage_failures(response: httpx.Response, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        storage(httpx.MockTransport(lambda request: response)).read("u1/a.webm")


def test_unreachable_storage_is_transient() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(StorageUnavailableError, match="did not answer"):
        storage(httpx.MockTransport(refuse)).read("u1/a.webm")
