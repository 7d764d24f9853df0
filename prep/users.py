"""`prep users`: an operator deletes or exports an account (by id or email) on its owner's request (GDPR 15, 17, 20).

Deletion runs the same steps as DELETE /account (functions/account/deletion.py), without the email confirmation:
the operator has verified the request. A step that fails leaves the deletion pending; the scheduled retry (or the
same command again) finishes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from functions.account.deletion import deleter_from
from functions.account.settings import AccountSettings
from prep.localdb import database_read_url, database_url
from shared.config import ConfigurationError, DatabaseSettings, load_settings
from shared.db import Database, DatabaseError, Freshness, connect, connect_reads

app = typer.Typer(no_args_is_help=True, help="Account deletion and export, on the owner's request.")
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

Who = Annotated[str, typer.Argument(help="The account's user id or email address.")]


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _resolve(database: Database, who: str) -> str:
    try:
        return str(database.call("service.find_account", {"identifier": who}))
    except DatabaseError as error:
        raise _fail(error.detail) from None


@app.command()
def delete(
    who: Who,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Cancel the account's billing, delete its recordings, then the account and everything it owns."""
    database = connect(DatabaseSettings(database_url=database_url()))
    user_id = _resolve(database, who)
    if not yes:
        typer.confirm(f"Delete account {user_id} and everything it owns? This cannot be undone", abort=True)
    try:
        settings = load_settings(AccountSettings, database_url=database_url())
    except ConfigurationError as error:
        raise _fail(str(error)) from error
    try:
        state = deleter_from(settings, database).request(user_id, requested_by="operator")
    except DatabaseError as error:
        raise _fail(str(error)) from error
    if state.status == "deleted":
        console.print(f"Account {user_id} deleted.")
        return
    raise _fail(
        f"deletion of {user_id} is pending: {state.last_error}. It is retried at {state.next_attempt_at:%Y-%m-%d %H:%M}"
        " UTC by the scheduled job, or run this command again."
    )


@app.command()
def export(
    who: Who,
    out: Annotated[Path | None, typer.Option(help="Write the JSON here (default: standard output).")] = None,
) -> None:
    """Everything the account owns as one JSON document (the export pages joined)."""
    settings = DatabaseSettings(database_url=database_url(), database_read_url=database_read_url())
    database = connect(settings)
    user_id = _resolve(database, who)
    # As GET /account/export: on the read replica once it has replayed everything committed before each page.
    reads = connect_reads(settings, database, Freshness.AT_REQUEST)
    document: dict[str, Any] | None = None
    cursor: dict[str, Any] | None = None
    try:
        while True:
            page = reads.call("service.export_account", {"user_id": user_id, "answers_after": cursor})
            if document is None:
                document = page
            else:
                document["answers"].extend(page["answers"])
            cursor = page["next"]
            if cursor is None:
                break
    except DatabaseError as error:
        raise _fail(str(error)) from error
    document["next"] = None
    text = json.dumps(document, indent=2, ensure_ascii=False)
    if out is None:
        console.out(text, highlight=False)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        console.print(f"Wrote {len(document['answers'])} answers and every other section to {out}.")
