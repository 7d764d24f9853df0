"""`prep questions`: the queue, a question's history, an operator's decisions, and curated files in and out."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from prep.cli import app
from tests.curation.bank import add_question, curate, serve, status, transitions
from tests.support.identities import sign_up


@pytest.fixture
def conn(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[psycopg.Connection]:
    """Committed rows (the console has its own connection), on this module's scratch database."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


def flagged(conn: psycopg.Connection) -> uuid.UUID:
    question = add_question(conn)
    for _ in range(3):
        reporter = sign_up(conn)
        serve(conn, reporter, question)
        conn.execute(
            "insert into public.question_reports (user_id, question_id, reason) values (%s, %s, 'offensive')",
            (reporter, question),
        )
    curate(conn)
    return question


def prep(*args: str) -> str:
    result = CliRunner().invoke(app, ["questions", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_queue_show_approve_and_retire(conn: psycopg.Connection) -> None:
    first, second = flagged(conn), flagged(conn)
    queue = prep("queue")
    assert str(first) in queue
    assert str(second) in queue
    assert "reported offensive" in queue

    shown = json.loads(prep("show", str(first)))
    assert shown["status"] == "under_review"
    assert shown["open_reports"] == {"offensive": 3}
    assert [t["reason"] for t in shown["transitions"]] == ["reported offensive"]

    assert f"{first}: under_review -> active (version 1)." in prep("approve", str(first), "--reason", "a fair question")
    assert "under_review -> retired" in prep("retire", str(second), "--reason", "slur in the text")
    assert status(conn, first) == ("active", True)
    assert status(conn, second) == ("retired", False)
    assert transitions(conn, second)[-1][2:4] == ("slur in the text", "operator")
    assert str(first) not in prep("queue")


def test_a_decision_without_a_reason_or_on_a_missing_question_says_why(conn: psycopg.Connection) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["questions", "retire", str(uuid.uuid4()), "--reason", "gone"])
    assert missing.exit_code == 1
    assert "no question" in missing.output
    empty = runner.invoke(app, ["questions", "retire", str(add_question(conn)), "--reason", ""])
    assert empty.exit_code == 1


def test_export_then_import_round_trips_and_a_bad_entry_imports_nothing(
    conn: psycopg.Connection, tmp_path: Path
) -> None:
    edited = add_question(conn, content="What is eventual consistency, in one sentence?")
    out = tmp_path / "bank.json"
    prep("export", "--out", str(out))
    bank = json.loads(out.read_text())
    assert any(q["id"] == str(edited) for q in bank)

    entry = next(q for q in bank if q["id"] == str(edited))
    entry["content"] = "What is eventual consistency, and when is it not enough?"
    new = {"content": "Walk me through how you would review a pull request.", "category": "technical",
           "difficulty": "easy", "experience_level": "entry", "key_points": ["Reads the tests first"]}  # fmt: skip
    out.write_text(json.dumps([entry, new, {**new, "content": new["content"].upper()}]))
    assert "1 added, 1 updated, 0 unchanged, 1 already in the bank" in prep("import", str(out))
    assert conn.execute("select version, content from public.questions where id = %s", (edited,)).fetchone() == (
        2, entry["content"]
    )  # fmt: skip

    before = conn.execute("select count(*) from public.questions").fetchone()
    bad = [{**new, "content": "A fresh and valid question about caching?"}, {**new, "difficulty": "brutal"}]
    out.write_text(json.dumps(bad))
    refused = CliRunner().invoke(app, ["questions", "import", str(out)])
    assert refused.exit_code == 1
    assert "question 2 of the file" in refused.output
    assert conn.execute("select count(*) from public.questions").fetchone() == before
