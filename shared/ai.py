"""The AI client the AI functions share: structured chat completions, audio transcription, usage and cost.

Any OpenAI-compatible server works (OPENAI_BASE_URL). Retries with exponential backoff on 429/5xx, timeouts
and connection errors are the SDK's own (AI_MAX_RETRIES); every outcome surfaces as one AiError subclass
whose `kind` a handler can map to a response. Every call that reaches the service, successful or not, yields
one AiUsage record for the caller's `usage_sink` (wired to `service.record_ai_usage`). Before each call the
caller's `budget` (wired to `service.reserve_ai_spend`) reserves the call's worst-case cost if it still fits
today's budgets, the platform's AI_DAILY_SPEND_CAP_USD and the user's plan ceiling (usage_limits.ai_spend_cents);
the call's usage then settles the reservation. What a call costs comes from the service's answer (tokens, or the
recording's duration), never from the user.

Untrusted text (a candidate's answer, a pasted job description) goes into prompts through `as_data`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, TypeVar, cast

import httpx
import openai
from openai.lib import type_to_response_format_param
from openai.types.audio import Transcription
from openai.types.audio.transcription import UsageDuration, UsageTokens
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from pydantic import BaseModel, ConfigDict, ValidationError

from shared.config import AiSettings
from shared.db import Database
from shared.metrics import Metric, emit

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

_MILLION = Decimal(1_000_000)
_COST_STEP = Decimal("0.00000001")  # sub-cent costs of single calls must not round to zero


class AiError(Exception):
    """An AI call failed; `kind` says how, so handlers can answer without matching on classes."""

    kind = "error"


class AiUnavailableError(AiError):
    """Transient: timeouts, connection errors, 429 or 5xx that outlasted the SDK's retries. Try again later, after
    `retry_after` seconds when the service said how long (its Retry-After)."""

    kind = "unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AiRejectedError(AiError):
    """The service rejected the request itself (wrong key, unknown model, bad request): retrying cannot help."""

    kind = "rejected"


class AiRefusedError(AiError):
    """The model declined to answer (a refusal or the provider's content filter)."""

    kind = "refused"


class AiInvalidOutputError(AiError):
    """The answer was not JSON, did not fit the expected model, or was cut off by the token limit."""

    kind = "invalid_output"


class AiDisabledError(AiError):
    """AI is switched off: no OPENAI_API_KEY is configured."""

    kind = "disabled"


class AiBudgetExceededError(AiError):
    """The call's worst-case cost does not fit today's budget: the platform's (`scope` "platform") or the
    user's plan ceiling ("user"). No call was made."""

    kind = "budget"

    def __init__(self, message: str, *, scope: Literal["platform", "user"]) -> None:
        super().__init__(message)
        self.scope = scope


class AiUsage(BaseModel):
    """One call to the AI service, as `service.record_ai_usage` stores it."""

    model_config = ConfigDict(frozen=True)

    purpose: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    audio_seconds: float | None
    cost_usd: Decimal
    latency_ms: int
    succeeded: bool
    error: str | None
    user_id: str | None
    response_id: str | None = None
    # The reservation this call settles (see BudgetCheck).
    reservation_id: str | None = None


class AiCall(BaseModel):
    """A call about to be made: for whom, and the most it can cost."""

    model_config = ConfigDict(frozen=True)

    purpose: str
    model: str
    user_id: str | None
    response_id: str | None
    worst_case_usd: Decimal


# Asked before every call: reserves its worst-case cost and returns the reservation's id, or raises
# AiBudgetExceededError (and no call is made).
BudgetCheck = Callable[[AiCall], str | None]

# Tokens a chat request spends framing each message (role markers) and priming the reply, counted generously.
_FRAMING_TOKENS = 32

# Transcription without a reported duration or token count is charged as if the recording were this sparse
# (16 kbit/s, below any speech codec's usual rate): an upper bound, never zero.
_MIN_AUDIO_BYTES_PER_SECOND = 2000


@dataclass
class _Meter:
    """What a call consumed, filled in as the response arrives; a failure before any response costs nothing."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    audio_seconds: float | None = None
    cost_usd: Decimal = Decimal(0)


class AiClient:
    def __init__(
        self,
        settings: AiSettings,
        usage_sink: Callable[[AiUsage], None] | None = None,
        http_client: httpx.Client | None = None,
        budget: BudgetCheck | None = None,
    ) -> None:
        self.settings = settings
        self._usage_sink = usage_sink
        self._http_client = http_client
        self._budget = budget
        self._openai: openai.OpenAI | None = None
        self._deadline: float | None = None

    def set_deadline(self, deadline: float | None) -> None:
        """Calls from now on end by `deadline` (a time.monotonic() value; None: no deadline): when the service asks
        for a wait (Retry-After) that would outlast it, the SDK does not sleep and retry, the call fails at once with
        AiUnavailableError.retry_after set, and the caller tries again later instead of being killed while waiting.
        (The SDK honours a Retry-After of up to two minutes, more than some callers have left.)"""
        self._deadline = deadline

    def structured(
        self,
        purpose: str,
        messages: list[dict[str, Any]],
        output: type[T],
        *,
        user_id: str | None = None,
        response_id: str | None = None,
        max_output_tokens: int = 2000,
    ) -> T:
        """Ask the chat model for one `output`, enforced by a strict JSON schema (Structured Outputs).

        Put instructions in the system message and untrusted text in `as_data` blocks (see there).
        """
        client = self._client()
        response_format = type_to_response_format_param(output)
        call = AiCall(
            purpose=purpose, model=self.settings.ai_model, user_id=user_id, response_id=response_id,
            worst_case_usd=self.worst_case_cost(messages, response_format, max_output_tokens),
        )  # fmt: skip
        with self._metered(call) as meter:
            # create() rather than parse(): parse() raises before returning the completion on bad output,
            # losing the token usage that was billed anyway.
            completion = client.chat.completions.create(
                model=self.settings.ai_model,
                messages=cast("list[ChatCompletionMessageParam]", messages),
                response_format=response_format,
                max_completion_tokens=max_output_tokens,
            )
            if not isinstance(completion, ChatCompletion):
                raise _not_the_api("a chat completion")
            if completion.usage is not None:
                meter.prompt_tokens = completion.usage.prompt_tokens
                meter.completion_tokens = completion.usage.completion_tokens
                meter.cost_usd = self._token_cost(meter.prompt_tokens, meter.completion_tokens)
            return _parse_output(completion, output, max_output_tokens)

    def worst_case_cost(self, messages: list[dict[str, Any]], response_format: Any, max_output_tokens: int) -> Decimal:
        """The most a chat call can cost. A token is at least one byte of UTF-8, so the request's bytes (the
        messages and the schema the model is held to), plus each message's framing, bound its prompt tokens."""
        prompt_bytes = len(json.dumps(messages, ensure_ascii=False).encode()) + len(
            json.dumps(response_format).encode()
        )
        return self._token_cost(prompt_bytes + _FRAMING_TOKENS * (len(messages) + 1), max_output_tokens)

    def transcribe(
        self, audio: bytes, filename: str, *, user_id: str | None = None, response_id: str | None = None
    ) -> str:
        """Transcribe a recording; `filename`'s extension tells the service the format (e.g. answer.webm).

        The cost is what the service reports: the recording's duration (whisper-1) or its audio and text tokens
        (gpt-4o-*-transcribe). A service that reports neither is charged the upper bound for the upload's size.
        """
        client = self._client()
        ceiling = self._audio_cost(len(audio) / _MIN_AUDIO_BYTES_PER_SECOND)
        call = AiCall(
            purpose="transcription", model=self.settings.ai_transcription_model, user_id=user_id,
            response_id=response_id, worst_case_usd=ceiling,
        )  # fmt: skip
        with self._metered(call) as meter:
            meter.cost_usd = ceiling  # until the service says what the call used
            transcription = client.audio.transcriptions.create(
                model=self.settings.ai_transcription_model, file=(filename, audio)
            )
            if not isinstance(transcription, Transcription):
                raise _not_the_api("a transcription")
            usage = transcription.usage
            if isinstance(usage, UsageTokens):
                meter.prompt_tokens = usage.input_tokens
                meter.completion_tokens = usage.output_tokens
                meter.cost_usd = self._transcription_token_cost(usage.input_tokens, usage.output_tokens)
            elif isinstance(usage, UsageDuration):
                meter.audio_seconds = usage.seconds
                meter.cost_usd = self._audio_cost(usage.seconds)
            else:
                logger.warning("transcription usage unreported; charged the upper bound", extra={"user_id": user_id})
            return transcription.text

    def _client(self) -> openai.OpenAI:
        # Built on first use, not at import or construction, so a cold start that needs no AI pays nothing.
        if not self.settings.enabled:
            raise AiDisabledError("AI features are switched off: set OPENAI_API_KEY to enable them.")
        if self._openai is None:
            assert self.settings.openai_api_key is not None  # enabled says so
            base_url = self.settings.openai_base_url
            http_client = self._http_client or openai.DefaultHttpxClient()
            http_client.event_hooks["response"].append(self._no_wait_past_deadline)
            self._openai = openai.OpenAI(
                api_key=self.settings.openai_api_key.get_secret_value(),
                base_url=str(base_url) if base_url else None,
                timeout=self.settings.ai_timeout_seconds,
                max_retries=self.settings.ai_max_retries,
                # Annotated as httpx2.Client, but the SDK accepts an httpx.Client and sends through it.
                http_client=cast(Any, http_client),
            )
        return self._openai

    def _no_wait_past_deadline(self, response: Any) -> None:
        """A response hook: a Retry-After longer than the time left marks the response not to be retried (the SDK
        obeys x-should-retry), so the call fails now, carrying the Retry-After, instead of sleeping past the end."""
        if self._deadline is None or response.status_code < 400:
            return
        wait = retry_after(response.headers)
        if wait is not None and wait > self._deadline - time.monotonic():
            response.headers["x-should-retry"] = "false"

    @contextmanager
    def _metered(self, call: AiCall) -> Iterator[_Meter]:
        """Reserve the call's worst case, time the call, turn SDK errors into AiErrors, and report one AiUsage
        however it ends (settling the reservation)."""
        reservation = self._budget(call) if self._budget is not None else None
        meter = _Meter()
        started = time.perf_counter()
        error: str | None = None
        try:
            try:
                yield meter
            except openai.OpenAIError as sdk_error:
                raise self._translate(sdk_error, call.model) from sdk_error
        except AiError as ai_error:
            error = f"{ai_error.kind}: {ai_error}"[:300]
            if isinstance(ai_error, AiUnavailableError | AiRejectedError):
                meter.cost_usd = Decimal(0)  # the service refused the request: nothing was billed
            raise
        except Exception as unexpected:
            error = f"unexpected: {type(unexpected).__name__}"
            raise
        finally:
            self._report(
                AiUsage(
                    purpose=call.purpose,
                    model=call.model,
                    prompt_tokens=meter.prompt_tokens,
                    completion_tokens=meter.completion_tokens,
                    audio_seconds=meter.audio_seconds,
                    cost_usd=meter.cost_usd,
                    latency_ms=round((time.perf_counter() - started) * 1000),
                    succeeded=error is None,
                    error=error,
                    user_id=call.user_id,
                    response_id=call.response_id,
                    reservation_id=reservation,
                )
            )

    def _report(self, usage: AiUsage) -> None:
        fields = usage.model_dump(mode="json")
        # Metrics AiCalls, AiCostUsd, AiLatency by purpose and outcome, and in total.
        emit(
            [
                Metric("AiCalls", 1),
                Metric("AiCostUsd", float(usage.cost_usd), "None"),
                Metric("AiLatency", usage.latency_ms, "Milliseconds"),
            ],
            {"Purpose": usage.purpose, "Outcome": "succeeded" if usage.succeeded else "failed"},
            aggregate=[()],
        )
        if usage.succeeded:
            logger.info("AI call", extra=fields)
        else:
            logger.warning("AI call failed", extra=fields)
        if self._usage_sink is None:
            return
        try:
            self._usage_sink(usage)
        except Exception:
            # Losing one usage row is better than losing an answer the user already paid for in latency.
            logger.exception("recording AI usage failed; the call's outcome stands", extra=fields)

    def _translate(self, error: openai.OpenAIError, model: str) -> AiError:
        attempts = self.settings.ai_max_retries + 1
        server = str(self.settings.openai_base_url or "api.openai.com")
        if isinstance(error, openai.APITimeoutError):
            return AiUnavailableError(
                f"the AI service did not answer within {self.settings.ai_timeout_seconds:g}s "
                f"({attempts} attempts); try again shortly."
            )
        if isinstance(error, openai.APIConnectionError):
            return AiUnavailableError(f"could not reach the AI service at {server} ({attempts} attempts); try again.")
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            if error.code == "insufficient_quota":
                return AiUnavailableError("the AI account has run out of credit; an operator must top up billing.")
            if status in (408, 409, 429) or status >= 500:
                wait = retry_after(error.response.headers)
                return AiUnavailableError(
                    f"the AI service is overloaded or failing (HTTP {status} after up to {attempts} attempts); "
                    + (f"try again in {wait:g}s, as it asked." if wait is not None else "try again in a minute."),
                    retry_after=wait,
                )
            if status == 401:
                return AiRejectedError(
                    f"the AI service at {server} rejected the API key (HTTP 401): "
                    "OPENAI_API_KEY is wrong, revoked or meant for another server."
                )
            if status == 403:
                return AiRejectedError(
                    f"the API key may not use model {model} (HTTP 403); check the key's project and permissions."
                )
            if status == 404:
                return AiRejectedError(
                    f"model {model} was not found at {server} (HTTP 404); "
                    "check AI_MODEL / AI_TRANSCRIPTION_MODEL and OPENAI_BASE_URL."
                )
            return AiRejectedError(f"the AI service rejected the request (HTTP {status}): {_server_message(error)}")
        return AiError(f"the AI call failed: {type(error).__name__}: {error}")

    def _token_cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        cost = (
            prompt_tokens * self.settings.ai_price_input_per_million_tokens
            + completion_tokens * self.settings.ai_price_output_per_million_tokens
        ) / _MILLION
        return cost.quantize(_COST_STEP, ROUND_HALF_UP)

    def _transcription_token_cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        cost = (
            input_tokens * self.settings.ai_price_transcription_input_per_million_tokens
            + output_tokens * self.settings.ai_price_transcription_output_per_million_tokens
        ) / _MILLION
        return cost.quantize(_COST_STEP, ROUND_HALF_UP)

    def _audio_cost(self, seconds: float) -> Decimal:
        minutes = Decimal(str(seconds)) / 60
        return (minutes * self.settings.ai_price_transcription_per_minute).quantize(_COST_STEP, ROUND_HALF_UP)


def retry_after(headers: Any) -> float | None:
    """Seconds a 429/5xx asks the client to wait: retry-after-ms (OpenAI's), else Retry-After in seconds or as an
    HTTP date; None when absent or unreadable."""
    for name, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
        try:
            seconds = float(headers.get(name) or "nan") / divisor
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(headers.get("retry-after") or "")
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _not_the_api(expected: str) -> AiInvalidOutputError:
    # Without strict response validation (which would reject lenient compatible servers) the SDK hands back a
    # non-JSON body, such as a proxy's HTML page, as a plain string.
    return AiInvalidOutputError(f"the AI service did not answer with {expected}; check OPENAI_BASE_URL.")


def _server_message(error: openai.APIStatusError) -> str:
    # The SDK's own message embeds the whole error body; the server's message alone is what a reader needs.
    message = error.body.get("message") if isinstance(error.body, dict) else None
    message = str(message or error.message)[:200]
    return f"{message} [{error.code}]" if error.code else message


# A whole reply wrapped in a ```json fence, or such a fence inside prose, from servers ignoring response_format.
_FENCED = re.compile(r"```(?:json)?[ \t]*\n(.*?)\n?[ \t]*```", re.DOTALL | re.IGNORECASE)


def _parse_output(completion: ChatCompletion, output: type[T], max_output_tokens: int) -> T:
    if not completion.choices:
        raise AiInvalidOutputError("the AI service returned a completion without choices; try again.")
    choice = completion.choices[0]
    message = choice.message
    if message.refusal:
        raise AiRefusedError(f"the model declined to answer: {message.refusal[:200]}")
    if choice.finish_reason == "content_filter":
        raise AiRefusedError("the provider's content filter stopped the answer; rephrase the input.")
    if choice.finish_reason == "length":
        raise AiInvalidOutputError(
            f"the answer was cut off at {max_output_tokens} output tokens; raise the limit or ask for less."
        )
    if not message.content:
        raise AiInvalidOutputError("the model returned an empty answer; try again.")
    text = message.content.strip()
    if not text.startswith(("{", "[")) and (fenced := _FENCED.search(text)):
        text = fenced.group(1)
    try:
        return output.model_validate_json(text)
    except ValidationError as invalid:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in invalid.errors()[:3])
        raise AiInvalidOutputError(
            f"the answer does not fit {output.__name__} ({problems}); try again, or use a model that supports "
            "Structured Outputs."
        ) from invalid


_LABEL = re.compile(r"[a-z][a-z0-9_]{0,39}")
# Runs of angle-like characters that could pass for a block delimiter, including Unicode look-alikes.
_OPENERS = re.compile(r"[<\uff1c\u2039\u00ab\u226a\u2329\u27e8\u3008]{3,}")
_CLOSERS = re.compile(r"[>\uff1e\u203a\u00bb\u226b\u232a\u27e9\u3009]{3,}")


def as_data(label: str, value: str, max_chars: int) -> str:
    """Wrap untrusted text as a delimited data block for a prompt: `<<<label`, the text, `>>>label`.

    The text is cut to `max_chars` (saying so inside the block), and anything in it that could pass for a
    delimiter is defused, so it cannot close the block early and speak as the prompt. Delimiting is
    hygiene, not a guarantee: callers must keep every instruction in the system message, tell the model
    there that blocks are data to assess and never instructions to follow, and restate the task after the
    data (the last words before the answer weigh most).
    """
    if not _LABEL.fullmatch(label):
        raise ValueError(f"label {label!r} must be lowercase letters, digits and underscores")
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    text = value[:max_chars]
    if len(value) > max_chars:
        text += f"\n[truncated: {len(value) - max_chars} more characters omitted]"
    text = _CLOSERS.sub(">>", _OPENERS.sub("<<", text))
    return f"<<<{label}\n{text}\n>>>{label}"


class _Reservation(BaseModel):
    """What `service.reserve_ai_spend` answers."""

    granted: bool
    reservation_id: str | None = None
    platform_spent_usd: Decimal
    scope: Literal["platform", "user"] | None = None
    user_ceiling_usd: Decimal


def database_budget(database: Database, settings: AiSettings) -> BudgetCheck:
    """Reserve a call's worst-case cost in public.ai_usage, or refuse it if it would take today's spend past the
    platform's cap or the user's ceiling (reservations are taken one at a time, so concurrent calls add up)."""

    def reserve(call: AiCall) -> str | None:
        answer = _Reservation.model_validate(
            database.call(
                "service.reserve_ai_spend",
                {"spend": {**call.model_dump(mode="json"), "platform_cap_usd": str(settings.ai_daily_spend_cap_usd)}},
            )
        )
        # Metric AiSpendOfCapPercent: today's platform spend with this call's worst case, against the cap (the
        # alarm fires past 80%). Measured before every call, so it follows the spend as it grows.
        committed = answer.platform_spent_usd + (call.worst_case_usd if answer.granted else 0)
        cap = settings.ai_daily_spend_cap_usd
        emit([Metric("AiSpendOfCapPercent", float(100 * committed / cap) if cap else 100.0, "Percent")])
        if answer.scope == "platform":
            raise AiBudgetExceededError(
                f"today's AI budget (${settings.ai_daily_spend_cap_usd}) is spent; AI resumes at 00:00 UTC",
                scope="platform",
            )
        if not answer.granted:
            raise AiBudgetExceededError(
                f"your plan's daily AI allowance (${answer.user_ceiling_usd}) is used up; it resets at 00:00 UTC",
                scope="user",
            )
        return answer.reservation_id

    return reserve


def database_usage_sink(database: Database) -> Callable[[AiUsage], None]:
    """Record every AI call in public.ai_usage (service.record_ai_usage): cost reports and the spend cap."""

    def record(usage: AiUsage) -> None:
        database.call("service.record_ai_usage", {"usage": json.loads(usage.model_dump_json())})

    return record
