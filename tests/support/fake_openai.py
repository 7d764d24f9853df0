"""A scriptable fake of the OpenAI API, served in process as an httpx transport.

    fake = FakeOpenAI()
    fake.chat.script(rate_limited(), reply({"questions": [...]}))
    client = AiClient(settings, http_client=httpx.Client(transport=fake))

Each route answers from its queue of behaviours, then from its `always` behaviour; an unscripted call fails
the test. Responses have the shapes the real API returns (chat.completion objects, transcriptions with usage,
`{"error": {...}}` bodies with the real statuses), so the real SDK parses them. Every request is recorded,
decoded, for assertions on what was sent.

A behaviour is any callable from the recorded request to an httpx.Response (or raising an httpx error);
`dynamic` builds one that picks its answer from the request, e.g. a rubric score from the answer sent.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

BASE_URL = "https://fake-openai.test/v1"


@dataclass(frozen=True)
class UploadedFile:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: httpx.Headers
    # The JSON body; for multipart uploads, each field's text, or an UploadedFile.
    body: dict[str, Any]

    @property
    def retry_count(self) -> int:
        """How many times the SDK had already tried this request (its x-stainless-retry-count header)."""
        return int(self.headers.get("x-stainless-retry-count", "0"))

    def text_of(self, role: str) -> str:
        """All text the chat request sent with `role` ("system", "user", ...), joined by blank lines."""
        texts: list[str] = []
        for message in self.body.get("messages", []):
            if message.get("role") != role:
                continue
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            else:
                texts.extend(part["text"] for part in content or [] if part.get("type") == "text")
        return "\n\n".join(texts)


Behaviour = Callable[[RecordedRequest], httpx.Response]


class Route:
    """One endpoint's script and the requests it received."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Behaviour] = deque()
        self._always: Behaviour | None = None

    def script(self, *behaviours: Behaviour) -> Route:
        """Answer the next calls with these behaviours, in order."""
        self._queue.extend(behaviours)
        return self

    def always(self, behaviour: Behaviour) -> Route:
        """Answer with `behaviour` whenever the script has run out."""
        self._always = behaviour
        return self

    @property
    def calls(self) -> int:
        return len(self.requests)

    @property
    def last(self) -> RecordedRequest:
        assert self.requests, f"no request reached {self.name}"
        return self.requests[-1]

    def _answer(self, request: RecordedRequest) -> httpx.Response:
        self.requests.append(request)
        if self._queue:
            return self._queue.popleft()(request)
        if self._always is not None:
            return self._always(request)
        raise AssertionError(f"fake OpenAI: unscripted call {self.calls} to {self.name}")


class FakeOpenAI(httpx.MockTransport):
    """POST /chat/completions and POST /audio/transcriptions, under any base path (e.g. BASE_URL)."""

    def __init__(self) -> None:
        self.chat = Route("chat/completions")
        self.transcriptions = Route("audio/transcriptions")
        super().__init__(self._handle)

    @property
    def calls(self) -> int:
        return self.chat.calls + self.transcriptions.calls

    def _handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.endswith("/chat/completions"):
            route = self.chat
        elif request.method == "POST" and path.endswith("/audio/transcriptions"):
            route = self.transcriptions
        else:
            return error(404, f"Invalid URL ({request.method} {path})", type="invalid_request_error")(
                _record(request, {})
            )
        request.read()
        body = _multipart(request) if route is self.transcriptions else json.loads(request.content)
        return route._answer(_record(request, body))


def _record(request: httpx.Request, body: dict[str, Any]) -> RecordedRequest:
    return RecordedRequest(request.method, request.url.path, request.headers, body)


def _multipart(request: httpx.Request) -> dict[str, Any]:
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.content)
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        filename = part.get_filename()
        if filename is None:
            fields[str(name)] = payload.decode()
        else:
            fields[str(name)] = UploadedFile(filename, part.get_content_type(), payload)
    return fields


def _headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"x-request-id": f"req_{secrets.token_hex(16)}", "openai-processing-ms": "42", **(extra or {})}


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)  # about four characters a token in English


# Chat completions


def completion(
    request: RecordedRequest,
    *,
    content: str | None,
    refusal: str | None = None,
    finish_reason: str = "stop",
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
) -> httpx.Response:
    """A chat.completion answering `request`, as the API returns it."""
    prompt = prompt_tokens if prompt_tokens is not None else _estimate_tokens(json.dumps(request.body["messages"]))
    produced = completion_tokens if completion_tokens is not None else _estimate_tokens(content or refusal or "")
    body = {
        "id": f"chatcmpl-{secrets.token_urlsafe(21)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": produced,
            "total_tokens": prompt + produced,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fake0000",
    }
    return httpx.Response(200, json=body, headers=_headers())


def reply(value: object, *, prompt_tokens: int | None = None, completion_tokens: int | None = None) -> Behaviour:
    """Answer with `value` as the message content: a string as is, anything else serialized as JSON."""
    content = value if isinstance(value, str) else json.dumps(value)
    return lambda request: completion(
        request, content=content, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )


def fenced(value: object) -> Behaviour:
    """What servers ignoring response_format often send: the JSON inside a ```json fence."""
    return reply(f"```json\n{json.dumps(value, indent=2)}\n```")


def refusal(text: str = "I'm sorry, but I can't help with that request.") -> Behaviour:
    return lambda request: completion(request, content=None, refusal=text)


def truncated(value: object) -> Behaviour:
    """The answer cut off by max_completion_tokens: half the JSON, finish_reason "length"."""
    content = json.dumps(value)
    return lambda request: completion(
        request,
        content=content[: len(content) // 2],
        finish_reason="length",
        completion_tokens=request.body.get("max_completion_tokens") or _estimate_tokens(content) // 2,
    )


def dynamic(choose: Callable[[RecordedRequest], Behaviour]) -> Behaviour:
    """A behaviour picked per request, e.g. `dynamic(lambda r: reply(score_for(r.text_of("user"))))`."""
    return lambda request: choose(request)(request)


# Transcriptions


def transcript(text: str, *, seconds: float | None = None) -> Behaviour:
    """A transcription: billed by duration (whisper-1's usage) when `seconds` is given, else by tokens."""

    def respond(request: RecordedRequest) -> httpx.Response:
        if seconds is not None:
            usage: dict[str, Any] = {"type": "duration", "seconds": seconds}
        else:
            upload = request.body.get("file")
            audio_tokens = max(1, len(upload.content) // 100) if isinstance(upload, UploadedFile) else 1
            output_tokens = _estimate_tokens(text)
            usage = {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                "output_tokens": output_tokens,
                "total_tokens": audio_tokens + output_tokens,
            }
        return httpx.Response(200, json={"text": text, "usage": usage}, headers=_headers())

    return respond


# Failures, on any route


def error(
    status: int,
    message: str,
    *,
    type: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Behaviour:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return lambda request: httpx.Response(status, json=body, headers=_headers(headers))


def rate_limited(retry_after_ms: int = 1) -> Behaviour:
    """429 with the retry-after headers the SDK honours (a tiny wait keeps tests fast)."""
    return error(
        429,
        "Rate limit reached for gpt-4o-mini in organization org-fake on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 1ms.",
        type="requests",
        code="rate_limit_exceeded",
        headers={"retry-after-ms": str(retry_after_ms), "retry-after": str(retry_after_ms // 1000)},
    )


def quota_exceeded() -> Behaviour:
    return error(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        type="insufficient_quota",
        code="insufficient_quota",
    )


def server_error(status: int = 500) -> Behaviour:
    return error(
        status,
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
    )


def unauthorized() -> Behaviour:
    return error(
        401,
        "Incorrect API key provided: sk-fake***0000. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        type="invalid_request_error",
        code="invalid_api_key",
    )


def timeout() -> Behaviour:
    def respond(request: RecordedRequest) -> httpx.Response:
        raise httpx.ReadTimeout("The read operation timed out")

    return respond


def connection_refused() -> Behaviour:
    def respond(request: RecordedRequest) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    return respond
