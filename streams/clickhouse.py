"""One small ClickHouse interface over embedded chdb or a server, plus versioned migrations.

URLs: ``http(s)://user:pass@host:port/db`` for a server (the database is created if missing);
``chdb://PATH`` for embedded, PATH being a filesystem path taken literally: absolute when it
starts with ``/`` (``chdb:///var/lib/ecrm/clickhouse``), else relative to the working directory
(``chdb://.ecrm/clickhouse``), so ``f"chdb://{path}"`` is always right. Query parameters
use ClickHouse's ``{name:Type}`` syntax with both backends. Inserts send JSONEachRow and
are idempotent per ``token``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from schemas.errors import ClickHouseError

SQL_DIR = Path(__file__).resolve().parents[1] / "clickhouse"
QUERIES_DIR = SQL_DIR / "queries"

#: Every insert carries these: the token makes a retried insert a no-op (with the table's
#: non_replicated_deduplication_window), ISO timestamps with offsets parse, JSON objects and
#: arrays land as text in String columns (events.items, events.extra), and a misspelt
#: column fails instead of being dropped.
INSERT_SETTINGS: dict[str, str | int] = {
    "insert_deduplicate": 1,
    "date_time_input_format": "best_effort",
    "input_format_skip_unknown_fields": 0,
    "input_format_json_read_objects_as_strings": 1,
    "input_format_json_read_arrays_as_strings": 1,
}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
_MIGRATION_FILE = re.compile(r"(\d{3})_[A-Za-z0-9_]+\.sql")
_SQL_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_SQL_TOKENS = re.compile(
    r"""--[^\n]*|/\*.*?\*/|'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*"|`[^`]*`|;|[^-/'"`;]+|.""", re.S
)
_ESCAPED = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class ClickHouse(Protocol):
    """What ecrm needs from ClickHouse, whichever backend serves it."""

    def execute(self, sql: str) -> None: ...

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]], *, token: str) -> None: ...

    def close(self) -> None: ...


def rows_json(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Rows as one JSON array (JSONEachRow accepts it): Decimal as a string, datetimes ISO with
    their offset (a naive one would be read in the column's zone, UTC: build only aware ones)."""
    return orjson.dumps(list(rows), default=_json_default)


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in ClickHouse: {value!r}")


def bind_param(value: Any) -> str:
    """A query parameter value in ClickHouse's escaped text form (what chdb's params expect)."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_ESCAPED)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    return _scalar(value)


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return sql_string(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    text = _scalar(value)
    return text if isinstance(value, int | float | Decimal) else sql_string(text)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ClickHouseError(f"naive datetime {value!r} as a query parameter; use UTC")
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, int | float | Decimal | date):
        return str(value)
    raise ClickHouseError(f"unsupported query parameter type {type(value).__name__}")


def sql_string(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def split_statements(sql: str) -> list[str]:
    """Statements of a .sql file, split on ``;`` outside quotes and comments; comment-only dropped."""
    statements, current = [], ""
    for token in _SQL_TOKENS.findall(sql):
        if token in ("'", '"', "`"):
            raise ClickHouseError(f"unterminated {token} in SQL: {first_line(sql)}")
        if token == ";":  # noqa: S105 - an SQL token, not a password
            statements.append(current)
            current = ""
        else:
            current += token
    statements.append(current)
    return [s.strip() for s in statements if _SQL_COMMENTS.sub("", s).strip()]


def first_line(sql: str) -> str:
    """The first line of a statement that is not a comment, for error messages."""
    for line in sql.splitlines():
        line = line.strip()
        if line and not line.startswith("--"):
            return line[:160]
    return sql.strip()[:160]


def load_query(name: str) -> str:
    """The analysts' named query clickhouse/queries/NAME.sql."""
    if not _NAME.fullmatch(name):
        raise ClickHouseError(f"bad query name {name!r}: letters, digits and _ only")
    path = QUERIES_DIR / f"{name}.sql"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in QUERIES_DIR.glob("*.sql")))
        raise ClickHouseError(f"no query {name!r} in {QUERIES_DIR} (known: {known})")
    return path.read_text(encoding="utf-8")


def _checked_table(table: str) -> str:
    if not _TABLE.fullmatch(table):
        raise ClickHouseError(f"bad table name {table!r}")
    return table


@contextmanager
def _named_errors(what: str, errors: type[Exception]) -> Iterator[None]:
    """Re-raise a driver's error as ClickHouseError naming the statement."""
    try:
        yield
    except errors as e:
        raise ClickHouseError(f"{first_line(what)}: {e}") from e


def _insert_settings_sql(token: str) -> str:
    settings = {**INSERT_SETTINGS, "insert_deduplication_token": token}
    return ", ".join(
        f"{k} = {sql_string(v) if isinstance(v, str) else v}" for k, v in settings.items()
    )


class ChdbClickHouse:
    """Embedded ClickHouse: one chdb engine per process, one process per data folder.

    Calls are serialized by a lock: chdb sessions are documented thread-safe, but an open
    streaming insert blocks every other statement on the connection.
    """

    def __init__(self, path: str) -> None:
        from chdb import session  # imported here: it loads a large native library

        self.path = path
        self._lock = threading.Lock()
        if path != ":memory:":
            Path(path).mkdir(parents=True, exist_ok=True)
        # chdb allows one data folder per process and one process per folder
        busy = f"cannot open embedded ClickHouse at {path!r} (is another process, e.g. `ecrm up`, using it?)"
        with _named_errors(busy, RuntimeError):
            self._session = session.Session(path)

    def execute(self, sql: str) -> None:
        self._run(sql, "CSV", None)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        bound = {k: bind_param(v) for k, v in (params or {}).items()}
        table = self._run(sql, "Arrowtable", bound)
        return list(table.to_pylist())

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]], *, token: str) -> None:
        if not rows:
            return
        data = rows_json(rows)
        statement = f"INSERT INTO {_checked_table(table)} SETTINGS {_insert_settings_sql(token)}"
        with self._lock, _named_errors(statement, RuntimeError):
            with self._session.send_insert(statement, "JSONEachRow") as inserter:
                inserter.append(data)
                inserter.finish()

    def close(self) -> None:
        with self._lock:
            self._session.close()

    def _run(self, sql: str, fmt: str, params: dict[str, str] | None) -> Any:
        with self._lock, _named_errors(sql, RuntimeError):
            return self._session.query(sql, fmt, params=params)


class ServerClickHouse:
    """A ClickHouse server over HTTP(S), through clickhouse-connect."""

    def __init__(self, client: Any) -> None:
        from clickhouse_connect.driver.exceptions import Error

        self._client = client
        self._driver_error = Error

    def execute(self, sql: str) -> None:
        with _named_errors(sql, self._driver_error):
            self._client.command(sql)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with _named_errors(sql, self._driver_error):
            return list(self._client.query(sql, parameters=params).named_results())

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]], *, token: str) -> None:
        if not rows:
            return
        settings = {**INSERT_SETTINGS, "insert_deduplication_token": token}
        with _named_errors(f"INSERT INTO {table}", self._driver_error):
            self._client.raw_insert(
                _checked_table(table),
                insert_block=rows_json(rows),
                settings=settings,
                fmt="JSONEachRow",
            )

    def close(self) -> None:
        self._client.close()


def connect(url: str) -> ClickHouse:
    """chdb://PATH -> embedded ClickHouse; http(s)://user:pass@host:port/db -> a server."""
    if url.startswith("chdb://") and len(url) > len("chdb://"):
        return ChdbClickHouse(url.removeprefix("chdb://"))
    if url.startswith(("http://", "https://")):
        return _connect_server(url)
    raise ClickHouseError(
        f"ClickHouse URL {url!r}: use chdb://PATH or http(s)://user:pass@host:port/db"
    )


def _connect_server(url: str) -> ServerClickHouse:
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import Error

    parts = urlsplit(url)
    database = unquote(parts.path.strip("/")) or "default"
    if not _NAME.fullmatch(database):
        raise ClickHouseError(f"ClickHouse URL {url!r}: bad database name {database!r}")
    secure = parts.scheme == "https"
    # https://…?ca_cert=/path/ca.pem: the CA that signed the server's certificate (else the
    # system's); the certificate is always verified
    tls = {k: v[-1] for k, v in parse_qs(parts.query).items() if k == "ca_cert"}
    where = {
        "host": parts.hostname or "localhost",
        "port": parts.port or (8443 if secure else 8123),
        "username": unquote(parts.username or "default"),
        "password": unquote(parts.password or ""),
        "secure": secure,
        **({"verify": True, **tls} if secure else {}),
    }
    with _named_errors(f"ClickHouse at {where['host']}:{where['port']}", Error):
        admin = clickhouse_connect.get_client(**where)
        admin.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        admin.close()
        return ServerClickHouse(clickhouse_connect.get_client(**where, database=database))


_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime64(3, 'UTC'))
ENGINE = MergeTree ORDER BY version SETTINGS non_replicated_deduplication_window = 1000
"""


def migrate(ch: ClickHouse, directory: Path = SQL_DIR) -> list[str]:
    """Apply clickhouse/NNN_*.sql not yet recorded in schema_migrations, in order.

    Returns the names applied now. Statements should be idempotent (IF NOT EXISTS): a crash
    between a file's statements and its record re-runs the whole file.
    """
    ch.execute(_MIGRATIONS_TABLE)
    applied = {row["version"] for row in ch.query("SELECT version FROM schema_migrations")}
    done: list[str] = []
    for version, path in migration_files(directory):
        if version in applied:
            continue
        for statement in split_statements(path.read_text(encoding="utf-8")):
            ch.execute(statement)
        record = {"version": version, "name": path.stem, "applied_at": datetime.now(UTC)}
        ch.insert("schema_migrations", [record], token=f"migration-{path.stem}")
        done.append(path.stem)
    return done


def migration_files(directory: Path = SQL_DIR) -> list[tuple[int, Path]]:
    """(version, path) of every NNN_name.sql in order; two files with one version is an error."""
    found: dict[int, Path] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.fullmatch(path.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise ClickHouseError(
                f"migrations {found[version].name} and {path.name} share a version"
            )
        found[version] = path
    return sorted(found.items())
