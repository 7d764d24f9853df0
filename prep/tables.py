"""Rows for the terminal, never cut: a table when it fits the console's width, otherwise one block per row
(`column  value`, long values folded), and `—` for a missing value."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

MISSING = "—"


def cell(value: object) -> str:
    return MISSING if value is None else str(value)


def rows_display(columns: Sequence[str], rows: Sequence[Sequence[object]], width: int, title: str = "") -> Table:
    cells = [[cell(value) for value in row] for row in rows]
    widest = [
        max([len(column), *(len(line) for row in cells for line in row[i].splitlines())])
        for i, column in enumerate(columns)
    ]
    # Cell padding and borders: 3 characters a column, and one.
    if sum(widest) + 3 * len(columns) + 1 <= width:
        table = Table(*columns, title=title or None, title_justify="left", title_style="bold")
        for row in cells:
            table.add_row(*row)
        return table
    records = Table(title=title or None, title_justify="left", title_style="bold", show_header=False, box=None)
    records.add_column(style="bold", no_wrap=True)
    records.add_column(overflow="fold")
    for index, row in enumerate(cells):
        if index:
            records.add_row("", "")
        for column, value in zip(columns, row, strict=True):
            records.add_row(column, value)
    return records
