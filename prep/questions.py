"""`prep questions`: operators curate the question bank as moderators do (migration 23).

The review queue, one question's history, and the decisions (approve, retire, with a reason; an edit makes a new
version) are the same transitions moderators insert through PostgREST, recorded with actor `operator`. A curated
file (JSON: a list of questions, the shape `export` writes) is imported whole or not at all.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from prep.localdb import database_url
from prep.tables import rows_display
from shared.config import DatabaseSettings
from shared.db import Database, DatabaseError, connect

app = typer.Typer(no_args_is_help=True, help="The question bank: review queue, decisions, curated files.")
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


class Status(StrEnum):
    provisional = "provisional"
    active = "active"
    under_review = "under_review"
    retired = "retired"


QuestionId = Annotated[str, typer.Argument(help="The question's id.")]
Reason = Annotated[str, typer.Option("--reason", help="Why (kept in the question's audit trail; 1-500 characters).")]


def _database() -> Database:
    return connect(DatabaseSettings(database_url=database_url()))


def _call(function: str, args: dict[str, Any] | None = None) -> Any:
    try:
        return _database().call(function, args)
    except DatabaseError as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None


@app.command()
def queue(limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100) -> None:
    """The questions under review, oldest flag first, with why they were flagged."""
    rows = _call("service.question_queue", {"max_rows": limit})
    if not rows:
        console.print("The review queue is empty.")
        return
    columns = ["id", "category", "difficulty", "reason", "open reports", "flagged at", "question"]
    cells = [
        [row["id"], row["category"], row["difficulty"], row["reason"], row["open_reports"],
         (row["flagged_at"] or "")[:16], row["content"]]
        for row in rows
    ]  # fmt: skip
    console.print(rows_display(columns, cells, console.width, title=f"{len(rows)} question(s) under review"))


@app.command()
def show(question_id: QuestionId) -> None:
    """A question with its versions, transitions (reasons and figures), open reports and answer statistics."""
    console.print_json(data=_call("service.question_detail", {"question_id": question_id}))


def _decide(question_id: str, status: str, reason: str, content: str | None = None) -> None:
    moved = _call(
        "service.moderate_question",
        {"question_id": question_id, "to_status": status, "reason": reason, "content": content},
    )
    console.print(f"{question_id}: {moved['from_status']} -> {moved['to_status']} (version {moved['version']}).")


@app.command()
def approve(
    question_id: QuestionId,
    reason: Reason,
    content: Annotated[str | None, typer.Option(help="New text (makes a new version).")] = None,
) -> None:
    """Put a question (back) in the active bank; its open reports are resolved and its statistics start again."""
    _decide(question_id, "active", reason, content)


@app.command()
def retire(question_id: QuestionId, reason: Reason) -> None:
    """Take a question out of the bank for good (it stays in the history of those who answered it)."""
    _decide(question_id, "retired", reason)


@app.command("import")
def import_file(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A JSON list of questions.")],
    reason: Annotated[str, typer.Option(help="Recorded with each status it changes.")] = "imported from a curated file",
) -> None:
    """Add or update questions from a curated file: all of it, or nothing if any entry is refused."""
    try:
        questions = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        errors.print(f"[red]error:[/red] {path} is not JSON: {error}")
        raise typer.Exit(1) from None
    counts = _call("service.import_questions", {"questions": questions, "reason": reason})
    console.print(
        f"Imported {path}: {counts['inserted']} added, {counts['updated']} updated, {counts['unchanged']} unchanged,"
        f" {counts['duplicates']} already in the bank."
    )


@app.command()
def export(
    out: Annotated[Path | None, typer.Option(help="Write the JSON here (default: standard output).")] = None,
    status: Annotated[Status | None, typer.Option(help="Only questions of this status.")] = None,
) -> None:
    """The bank (or one status of it) as a curated file that `import` reads back."""
    questions = _call("service.export_questions", {"only_status": status})
    text = json.dumps(questions, indent=2, ensure_ascii=False)
    if out is None:
        console.out(text, highlight=False)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        console.print(f"Wrote {len(questions)} questions to {out}.")
