"""Logs carrying the id of the request being served: one JSON object per line in Lambda (what CloudWatch Logs
Insights queries, docs/operations.md "Reading the logs"), one readable line of text elsewhere (`prep serve`, tests)."""

from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else was passed through `extra=` and belongs in the output.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id.get(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`18:04:05 INFO    http: request method=POST path=/questions status=200 ... request_id=...` (local time)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}
        if rid := request_id.get():
            fields["request_id"] = rid
        line = (
            f"{datetime.fromtimestamp(record.created).strftime('%H:%M:%S')} {record.levelname:<7} {record.name}: "
            f"{record.getMessage()}"
        )
        if fields:
            line += " " + " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if not text or any(c.isspace() or c == '"' for c in text) else text


def configure_logging(level: str = "INFO") -> None:
    """JSON lines to stdout in Lambda (what it ships to CloudWatch), text elsewhere. Idempotent."""
    formatter = JsonFormatter if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else TextFormatter
    root = logging.getLogger()
    if not any(type(h.formatter) is formatter for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(formatter())
        root.handlers = [handler]
    root.setLevel(level)
    # Client libraries log every request at INFO; our own request line already says what happened.
    for chatty in ("stripe", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
