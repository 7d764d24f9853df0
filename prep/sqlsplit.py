"""Splits SQL into statements exactly as the Supabase CLI does (`supabase db push`, `migration up`, `db reset`).

The CLI records each migration's statements in `supabase_migrations.schema_migrations.statements`; prep records
the same list, so either tool reads the other's history. The CLI's splitter (pkg/parser, `SplitAndTrim`) is a
small state machine over the text: a `;` ends a statement unless it is inside a quote ('' or ""), a dollar quote,
a `--` or `/* */` comment, parentheses, or a `BEGIN ATOMIC ... END` body, or follows a backslash. Each piece keeps
its leading comments, loses its trailing `;` and surrounding white space, and is dropped only when that leaves it
empty: comments after the last `;` become a statement of their own. Its quirks are reproduced on purpose (the
first `)` closes nested parentheses; `END` anywhere ends an atomic body), since matching the CLI is the point.
"""

from __future__ import annotations

import re

# Go's unicode.IsSpace: what strings.TrimSpace removes (Python's str.strip also removes \x1c-\x1f).
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
_ATOMIC = "atomic"
_END = "end"


class _Ready:
    __slots__ = ()


class _Dash:  # one `-` seen: a second one opens a line comment
    __slots__ = ()


class _Slash:  # a `/` seen (or inside a block comment when depth > 0)
    __slots__ = ("depth",)

    def __init__(self) -> None:
        self.depth = 0


class _Quote:
    __slots__ = ("delimiter", "escape")

    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter
        self.escape = False


class _Dollar:  # inside text that ends at `delimiter`: a $tag$ body, or a line comment up to "\n"
    __slots__ = ("delimiter",)

    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter


class _Tag:
    __slots__ = ("offset",)

    def __init__(self, offset: int) -> None:
        self.offset = offset


class _Escape:
    __slots__ = ()


class _Atomic:  # inside (...) or BEGIN ATOMIC ... END: `;` does not split
    __slots__ = ("delimiter", "inner")

    def __init__(self, inner: _State, delimiter: str) -> None:
        self.inner = inner
        self.delimiter = delimiter


class _Text:
    """The current piece, sql[start:end], without copying it: the states only look at its last few characters."""

    __slots__ = ("end", "sql", "start")

    def __init__(self, sql: str, start: int, end: int) -> None:
        self.sql, self.start, self.end = sql, start, end

    def tail(self, length: int) -> str:
        return self.sql[max(self.start, self.end - length) : self.end]


_State = _Ready | _Dash | _Slash | _Quote | _Dollar | _Tag | _Escape | _Atomic


def _ready_next(state: _Ready, char: str, data: _Text) -> _State | None:
    if char == "$":
        return _Tag(data.end - 1)
    if char in "'\"":
        return _Quote(char)
    if char == "-":
        return _Dash()
    if char == "/":
        return _Slash()
    if char == "\\":
        return _Escape()
    if char == ";":
        return None  # the statement ends here
    if char == "(":
        return _Atomic(state, ")")
    if char in "cC":
        offset = data.end - len(_ATOMIC)
        if offset > data.start and data.tail(len(_ATOMIC)).lower() == _ATOMIC and data.sql[offset - 1] in _GO_SPACE:
            return _Atomic(state, _END)
    return state


def _next(state: _State, char: str, data: _Text) -> _State | None:
    """The state after `char`, the last character of `data` (None: a statement ends with it)."""
    if isinstance(state, _Ready):
        return _ready_next(state, char, data)
    if isinstance(state, _Dash):
        return _Dollar("\n") if char == "-" else _ready_next(_Ready(), char, data)
    if isinstance(state, _Slash):
        window = data.tail(2)
        if window == "/*":
            state.depth += 1
            return state
        if state.depth == 0:
            return _ready_next(_Ready(), char, data)
        if window == "*/":
            state.depth -= 1
            if state.depth == 0:
                return _Ready()
        return state
    if isinstance(state, _Quote):
        if state.escape:
            if char == state.delimiter:  # a doubled quote stays inside
                state.escape = False
                return state
            return _ready_next(_Ready(), char, data)
        if char == state.delimiter:
            state.escape = True
        return state
    if isinstance(state, _Dollar):
        return _Ready() if data.tail(len(state.delimiter)) == state.delimiter else state
    if isinstance(state, _Tag):
        if char == "$":
            return _Dollar(data.sql[state.offset : data.end])
        if char.isalpha() or char.isdigit() or char == "_":
            return state
        return _ready_next(_Ready(), char, data)
    if isinstance(state, _Escape):
        return _Ready()
    # _Atomic: the inner state decides whether a delimiter is quoted; a `;` inside never splits.
    inner = _next(state.inner, char, data)
    if inner is not None:
        state.inner = inner
    if isinstance(state.inner, _Ready) and data.tail(len(state.delimiter)).lower() == state.delimiter.lower():
        return _Ready()
    return state


def split_raw(sql: str) -> list[str]:
    """The pieces the CLI's tokenizer emits, untrimmed: each up to and including its `;`, then the rest."""
    pieces: list[str] = []
    state: _State = _Ready()
    start = 0
    for index, char in enumerate(sql):
        following = _next(state, char, _Text(sql, start, index + 1))
        if following is None:
            pieces.append(sql[start : index + 1])
            start = index + 1
            state = _Ready()
        else:
            state = following
    if start < len(sql):
        pieces.append(sql[start:])
    return pieces


def split_and_trim(sql: str) -> list[str]:
    """The statements the Supabase CLI runs and records for a migration file, in its exact form."""
    statements = []
    for piece in split_raw(sql):
        trimmed = piece.rstrip(";").strip(_GO_SPACE)
        if trimmed:
            statements.append(trimmed)
    return statements


_COMMENT_OR_TEXT = re.compile(r"--[^\n]*|/\*|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$", re.S)


def without_comments(statement: str) -> str:
    """The statement with its comments removed (quoted and dollar-quoted text kept as is), trimmed, no `;`."""
    out: list[str] = []
    position = 0
    while True:
        match = _COMMENT_OR_TEXT.search(statement, position)
        if match is None:
            out.append(statement[position:])
            break
        out.append(statement[position : match.start()])
        token = match.group()
        if token.startswith("--"):
            position = match.end()
        elif token == "/*":
            position = _block_comment_end(statement, match.start())
        elif token.startswith("$"):
            end = statement.find(token, match.end())
            end = len(statement) if end < 0 else end + len(token)
            out.append(statement[match.start() : end])
            position = end
        else:
            out.append(token)
            position = match.end()
    return "".join(out).strip().rstrip(";").strip()


def _block_comment_end(text: str, start: int) -> int:
    depth = 0
    index = start
    while index < len(text) - 1:
        pair = text[index : index + 2]
        if pair == "/*":
            depth += 1
            index += 2
        elif pair == "*/":
            depth -= 1
            index += 2
            if depth == 0:
                return index
        else:
            index += 1
    return len(text)


def code_start(statement: str) -> int:
    """Where the statement's code begins, past the comments and white space the CLI keeps in front of it."""
    index = 0
    while index < len(statement):
        if statement[index] in _GO_SPACE:
            index += 1
        elif statement.startswith("--", index):
            newline = statement.find("\n", index)
            index = len(statement) if newline < 0 else newline + 1
        elif statement.startswith("/*", index):
            index = _block_comment_end(statement, index)
        else:
            break
    return index
