"""What an HTTP response must never carry: the database's own error text (issue 22, section 4)."""

from __future__ import annotations

# Phrases from PostgreSQL's and psycopg's messages, none of which the project's own messages use.
DATABASE_PHRASES = (
    "violates",  # unique, check, foreign key, not-null and exclusion constraints
    "duplicate key",
    "invalid input syntax",
    "invalid input value for enum",
    "unsupported unicode escape",
    "null value in column",
    "value too long for type",
    "out of range for type",
    "syntax error at or near",
    "permission denied for",
    "canceling statement",
    "current transaction is aborted",
    "connection to server",
    "sqlstate",
    "psycopg",
)


def database_text_in(text: str) -> str | None:
    """The first database phrase `text` contains, if any."""
    lowered = text.lower()
    return next((phrase for phrase in DATABASE_PHRASES if phrase in lowered), None)
