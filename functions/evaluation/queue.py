"""Where requested evaluations wait for the worker: SQS in AWS, a queue inside the process for local runs.

A message is `{"response_id": "..."}`: the database holds everything else, so a message can be delivered
twice, late, or after the answer was evaluated, and the worker still does the right thing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("evaluation.queue")

BatchHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


class QueueUnavailableError(Exception):
    """The queue did not take the message."""


class EvaluationQueue(Protocol):
    def send(self, response_id: str) -> None:
        """Queue one evaluation; raises QueueUnavailableError if the queue did not take it."""
        ...


def message_body(response_id: str) -> str:
    return json.dumps({"response_id": response_id})


# https://sqs.<region>.amazonaws.com/<account>/<name>, or the legacy https://<region>.queue.amazonaws.com/...
_REGION_IN_URL = re.compile(r"^https?://(?:sqs\.([a-z0-9-]+)\.amazonaws\.com|([a-z0-9-]+)\.queue\.amazonaws\.com)/")


class SqsQueue:
    def __init__(self, queue_url: str, *, timeout_seconds: float = 5, client: Any = None) -> None:
        self.queue_url = queue_url
        self._timeout = timeout_seconds
        self._client = client
        self._lock = threading.Lock()

    def _sqs(self) -> Any:
        with self._lock:  # creating a boto3 client is not thread-safe; using one is
            if self._client is None:
                # boto3 ships with Lambda's runtime; only this queue needs it, on its first message.
                import boto3
                from botocore.config import Config

                match = _REGION_IN_URL.match(self.queue_url)
                self._client = boto3.client(
                    "sqs",
                    region_name=(match.group(1) or match.group(2)) if match else None,
                    config=Config(
                        connect_timeout=self._timeout,
                        read_timeout=self._timeout,
                        retries={"mode": "standard", "total_max_attempts": 2},
                    ),
                )
            return self._client

    def send(self, response_id: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._sqs().send_message(QueueUrl=self.queue_url, MessageBody=message_body(response_id))
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "unknown")
            raise QueueUnavailableError(f"SQS refused the message ({code})") from error
        except BotoCoreError as error:
            raise QueueUnavailableError(f"SQS did not answer: {type(error).__name__}") from error


# SQS's longest visibility timeout (12 hours).
MAX_VISIBILITY_SECONDS = 43_200


class SqsVisibility:
    """Gives a received message back to its queue after `seconds` (ChangeMessageVisibility) rather than after the
    queue's visibility timeout: how the worker honours a Retry-After it has no time left to wait out."""

    def __init__(self, *, timeout_seconds: float = 5, client: Any = None) -> None:
        self._timeout = timeout_seconds
        self._client = client
        self._lock = threading.Lock()

    def __call__(self, record: dict[str, Any], seconds: float) -> None:
        # The record's queue: arn:aws:sqs:<region>:<account>:<name>.
        _, _, _, region, account, name = str(record["eventSourceARN"]).split(":", 5)
        self._sqs(region).change_message_visibility(
            QueueUrl=f"https://sqs.{region}.amazonaws.com/{account}/{name}",
            ReceiptHandle=record["receiptHandle"],
            VisibilityTimeout=min(max(math.ceil(seconds), 0), MAX_VISIBILITY_SECONDS),
        )

    def _sqs(self, region: str) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.client(
                    "sqs",
                    region_name=region,
                    config=Config(connect_timeout=self._timeout, read_timeout=self._timeout),
                )
            return self._client


@dataclass
class _Message:
    message_id: str
    body: str
    sent_at_ms: int
    receives: int = 0

    def record(self) -> dict[str, Any]:
        """The message as Lambda's SQS event source hands it over."""
        now_ms = int(time.time() * 1000)
        return {
            "messageId": self.message_id,
            "receiptHandle": f"local-{self.message_id}-{self.receives}",
            "body": self.body,
            "attributes": {
                "ApproximateReceiveCount": str(self.receives),
                "SentTimestamp": str(self.sent_at_ms),
                "SenderId": "local",
                "ApproximateFirstReceiveTimestamp": str(now_ms),
            },
            "messageAttributes": {},
            "md5OfBody": hashlib.md5(self.body.encode()).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:local:000000000000:evaluations",
            "awsRegion": "local",
        }


class InProcessQueue:
    """SQS and its Lambda trigger in miniature, so a local run evaluates end to end without AWS.

    A background thread takes up to `batch_size` waiting messages, hands them to `handle_batch` as an SQS
    event, and redelivers the records it reports in `batchItemFailures` after `redelivery_delay_seconds`,
    until `max_receives`; past that a message is dropped (logged, kept in `dead_letters`), as SQS would move
    it to the dead-letter queue.
    """

    def __init__(
        self,
        handle_batch: BatchHandler,
        *,
        batch_size: int = 10,
        max_receives: int = 3,
        redelivery_delay_seconds: float = 1.0,
    ) -> None:
        self._handle_batch = handle_batch
        self._batch_size = batch_size
        self._max_receives = max_receives
        self._redelivery_delay = redelivery_delay_seconds
        self._messages: queue.Queue[_Message | None] = queue.Queue()
        self._unfinished = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self.dead_letters: list[str] = []

    def send(self, response_id: str) -> None:
        with self._idle:
            if self._thread is None:
                self._thread = threading.Thread(target=self._consume, name="evaluation-queue", daemon=True)
                self._thread.start()
            self._unfinished += 1
        self._messages.put(_Message(uuid.uuid4().hex, message_body(response_id), int(time.time() * 1000)))

    def drain(self, timeout: float) -> bool:
        """Wait until every message sent so far is acknowledged or dead-lettered; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished == 0, timeout)

    def close(self) -> None:
        if self._thread is not None:
            self._messages.put(None)
            self._thread.join()
            self._thread = None

    def _consume(self) -> None:
        while (first := self._messages.get()) is not None:
            batch = [first]
            while len(batch) < self._batch_size:
                try:
                    more = self._messages.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._messages.put(None)  # stop after this batch
                    break
                batch.append(more)
            self._deliver(batch)

    def _deliver(self, batch: list[_Message]) -> None:
        for message in batch:
            message.receives += 1
        try:
            result = self._handle_batch({"Records": [m.record() for m in batch]}, None)
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        except Exception:
            # Lambda treats a handler that raised as a failure of the whole batch.
            log.exception("evaluation batch failed")
            failed = {m.message_id for m in batch}
        for message in batch:
            if message.message_id in failed and message.receives < self._max_receives:
                timer = threading.Timer(self._redelivery_delay, self._messages.put, (message,))
                timer.daemon = True
                timer.start()
                continue
            if message.message_id in failed:
                log.error(
                    "evaluation message dead-lettered", extra={"body": message.body, "receives": message.receives}
                )
                self.dead_letters.append(json.loads(message.body)["response_id"])
            with self._idle:
                self._unfinished -= 1
                self._idle.notify_all()
