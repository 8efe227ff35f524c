"""A marketer's where-clause over customer profiles (`ecrm audience export --where`), checked
at the door before it goes near ClickHouse.

The clause is pasted into the audience query (clickhouse/audience/profiles.sql), so it is
parsed into tokens and only a small SQL is let through: the profile columns, literals,
comparison, arithmetic and logic, and a few harmless functions (`has(tags, 'vip')`,
`now() - INTERVAL 90 DAY`). Anything else — another table, a subquery, `SETTINGS`, a comment,
a `;`, a quoted identifier, a query parameter — is refused with where it is and why. The
clause that runs is rebuilt from the checked tokens, never the text as given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.errors import AudienceError
from schemas.rule_values import did_you_mean

#: The columns of `profiles_latest` a where-clause may test, in the order an export writes them.
PROFILE_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "shop_id",
    "segment",
    "recency_days",
    "frequency",
    "monetary",
    "first_order_at",
    "last_order_at",
    "level",
    "points",
    "tags",
    "cart_items",
    "cart_value",
    "as_of",
)
#: Words of the clause's grammar (any case).
KEYWORDS = frozenset(
    {"AND", "OR", "NOT", "IN", "BETWEEN", "IS", "NULL", "LIKE", "ILIKE", "TRUE", "FALSE"}
    | {"INTERVAL", "SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR"}
)
#: Functions that only compute on their arguments (no I/O, no other tables, no sleeping).
FUNCTIONS: tuple[str, ...] = (
    "has",
    "hasAny",
    "hasAll",
    "length",
    "empty",
    "notEmpty",
    "lower",
    "upper",
    "startsWith",
    "endsWith",
    "abs",
    "round",
    "coalesce",
    "ifNull",
    "isNull",
    "isNotNull",
    "now",
    "today",
    "toDate",
    "toDateTime",
    "addDays",
    "subtractDays",
    "dateDiff",
)
MAX_LENGTH = 4000

_FUNCTION_BY_LOWER = {name.lower(): name for name in FUNCTIONS}
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^'\\]|\\.|'')*')
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|!=|<>|==|[=<>+\-*/%(),\[\]])
    """,
    re.VERBOSE,
)
_CLOSING = {"(": ")", "[": "]"}


@dataclass(frozen=True)
class Token:
    """One checked piece of the clause: its kind, its text as it will run, where it began."""

    kind: str  # "string" | "number" | "column" | "keyword" | "function" | "op"
    text: str
    at: int  # 1-based character position in the clause as given


def checked_where(clause: str) -> str:
    """The clause as it will run, rebuilt from checked tokens; AudienceError naming the
    position and the problem when it says anything outside the allowed language."""
    tokens = tokenize(clause)
    if not tokens:
        raise AudienceError(
            "--where is empty: say which customers, e.g. segment = 'important_keep'"
        )
    _check_structure(tokens)
    return " ".join(t.text for t in tokens)


def tokenize(clause: str) -> list[Token]:
    """The clause's tokens; AudienceError at the first character that is not allowed."""
    if len(clause) > MAX_LENGTH:
        raise AudienceError(f"--where is {len(clause)} characters long; at most {MAX_LENGTH}")
    tokens: list[Token] = []
    pos = 0
    while pos < len(clause):
        if clause.startswith(("--", "/*", "*/"), pos):
            raise _problem(clause, pos, "comments are not allowed")
        match = _TOKEN.match(clause, pos)
        if match is None:
            raise _problem(clause, pos, _why_not(clause[pos]))
        kind = match.lastgroup
        text = match.group()
        if kind == "name":
            tokens.append(_named(clause, pos, text))
        elif kind != "space":
            assert kind is not None
            tokens.append(Token(kind, text, pos + 1))
        pos = match.end()
    return tokens


def _named(clause: str, pos: int, word: str) -> Token:
    """A bare word: a profile column, a keyword or an allowed function, else refused."""
    lower = word.lower()
    if lower in PROFILE_COLUMNS:
        return Token("column", lower, pos + 1)
    if word.upper() in KEYWORDS:
        return Token("keyword", word.upper(), pos + 1)
    if lower in _FUNCTION_BY_LOWER:
        return Token("function", _FUNCTION_BY_LOWER[lower], pos + 1)
    hint = did_you_mean(lower, PROFILE_COLUMNS + tuple(_FUNCTION_BY_LOWER))
    raise _problem(
        clause,
        pos,
        f'"{word}" is not a profile column{hint}; columns: {", ".join(PROFILE_COLUMNS)} '
        f"(functions: {', '.join(FUNCTIONS)})",
    )


def _check_structure(tokens: list[Token]) -> None:
    """Brackets balance, so the clause cannot close the query's own; functions are called,
    columns are not."""
    opened: list[Token] = []
    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        calls = following is not None and following.text == "("
        if token.kind == "function" and not calls:
            raise _at(token, f"{token.text} is a function: write {token.text}(...)")
        if token.kind == "column" and calls:
            raise _at(token, f"{token.text} is a column, not a function")
        if token.text in _CLOSING:
            opened.append(token)
        elif token.text in _CLOSING.values():
            if not opened or _CLOSING[opened[-1].text] != token.text:
                raise _at(token, f'"{token.text}" closes nothing')
            opened.pop()
    if opened:
        raise _at(opened[-1], f'"{opened[-1].text}" is never closed')


def _why_not(char: str) -> str:
    if char == "'":
        return "a string that is never closed"
    if char == ";":
        return "one condition only: ; is not allowed"
    if char in '`"':
        return "quoted names are not allowed: write the column name as it is"
    if char in "{}":
        return "query parameters are not allowed"
    return f'"{char}" is not allowed'


def _problem(clause: str, pos: int, why: str) -> AudienceError:
    shown = clause[max(pos - 20, 0) : pos + 20].replace("\n", " ")
    return AudienceError(f"--where, at character {pos + 1} (…{shown}…): {why}")


def _at(token: Token, why: str) -> AudienceError:
    return AudienceError(f"--where, at character {token.at} ({token.text}): {why}")
