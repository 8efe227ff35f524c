"""One small ClickHouse interface over embedded chdb or a server, plus versioned migrations.

URLs: ``http(s)://user:pass@host:port/db`` for a server (the database is created if missing);
``chdb://PATH`` for embedded, PATH being a filesystem path taken literally: absolute when it
starts with ``/`` (``chdb:///var/lib/ecrm/clickhouse``), else relative to the working directory
(``chdb://.ecrm/clickhouse``), so ``f"chdb://{path}"`` is always right. Query parameters
use ClickHouse's ``{name:Type}`` syntax. Both kinds go through one clickhouse-connect
client (it serves chdb itself), so embedded and server run the same code. Inserts go in the
native format and are idempotent per ``token``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from schemas.errors import ClickHouseError
from streams.clickhouse_columns import BadValue, Column, UnknownColumn, block

SQL_DIR = Path(__file__).resolve().parents[1] / "clickhouse"
QUERIES_DIR = SQL_DIR / "queries"

#: Every insert carries these: the token makes a retried insert a no-op (with the table's
#: non_replicated_deduplication_window).
INSERT_SETTINGS: dict[str, str | int] = {"insert_deduplicate": 1}

#: ClickHouse error codes that say "not now" rather than "not this": the insert is retried
#: as it is, never split or rejected (the server's src/Common/ErrorCodes.cpp).
TRANSIENT_CODES = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        164,  # READONLY (a replica in read-only mode, e.g. Keeper away)
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
    }
)
#: Error codes that blame the data of some rows (a value a column cannot hold): the sink
#: bisects such an insert to find them. Errors with no code (a value refused before it was
#: sent) count too.
ROW_CODES = frozenset(
    {6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131, 190, 321, 407, 469, 691}
)
_CODE = re.compile(r"Code: (\d+)")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
_MIGRATION_FILE = re.compile(r"(\d{3})_[A-Za-z0-9_]+\.sql")
_SQL_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_SQL_TOKENS = re.compile(
    r"""--[^\n]*|/\*.*?\*/|'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*"|`[^`]*`|;|[^-/'"`;]+|.""", re.S
)


class ClickHouse(Protocol):
    """What ecrm needs from ClickHouse, whichever backend serves it."""

    def execute(self, sql: str) -> None: ...

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]], *, token: str) -> None: ...

    def close(self) -> None: ...


def rows_json(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Rows as one JSON array (the outbox's format): Decimal as a string, datetimes ISO with
    their offset (a naive one would be read as UTC: build only aware ones)."""
    return orjson.dumps(list(rows), default=_json_default)


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in ClickHouse: {value!r}")


def sql_string(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def refuses_rows(error: ClickHouseError) -> bool:
    """Whether the error says some rows of an insert are bad (not the insert, nor the moment)."""
    return not error.transient and (error.code is None or error.code in ROW_CODES)


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
def _named_errors(what: str) -> Iterator[None]:
    """Re-raise the driver's error (or a value a column cannot hold) as ClickHouseError naming
    the statement, with the server's error code and whether a retry may succeed."""
    from clickhouse_connect.driver.exceptions import Error, OperationalError

    try:
        yield
    except BadValue as e:
        raise ClickHouseError(f"{first_line(what)}: {e}") from e
    except Error as e:
        code = getattr(e, "code", None)
        if not isinstance(code, int):
            match = _CODE.search(str(e))
            code = int(match.group(1)) if match else None
        transient = code in TRANSIENT_CODES or (code is None and isinstance(e, OperationalError))
        raise ClickHouseError(f"{first_line(what)}: {e}", code=code, transient=transient) from e


class ConnectClickHouse:
    """ClickHouse through a clickhouse-connect Client: a server over HTTP(S), or embedded chdb
    (clickhouse-connect's chdb client), so tests run the code path a server gets.

    Inserts are native-format blocks: the table's columns are read once (cached until the
    next `execute`, which may be DDL) and each outbox value converted to its column's type
    (streams/clickhouse_columns.py): all of them before anything is sent, so an insert goes
    in whole or not at all.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._columns: dict[str, dict[str, Column]] = {}
        self._columns_lock = threading.Lock()

    def execute(self, sql: str) -> None:
        with _named_errors(sql):
            self._client.command(sql)
        with self._columns_lock:
            self._columns.clear()

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        for name, value in (params or {}).items():
            _check_param(name, value)
        with _named_errors(sql):
            return list(self._client.query(sql, parameters=params).named_results())

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]], *, token: str) -> None:
        if not rows:
            return
        statement = f"INSERT INTO {_checked_table(table)}"
        with _named_errors(statement):
            try:
                names, types, data = block(rows, self._table_columns(table), table)
            except UnknownColumn:  # maybe added since it was cached (another process migrated)
                with self._columns_lock:
                    self._columns.pop(table, None)
                names, types, data = block(rows, self._table_columns(table), table)
            self._client.insert(
                table,
                data,
                column_names=names,
                column_type_names=types,
                column_oriented=True,
                settings={**INSERT_SETTINGS, "insert_deduplication_token": token},
            )

    def close(self) -> None:
        self._client.close()

    def _table_columns(self, table: str) -> dict[str, Column]:
        with self._columns_lock:
            known = self._columns.get(table)
        if known is not None:
            return known
        database, _, name = table.rpartition(".")
        result = self._client.query(
            "SELECT name, type, default_kind FROM system.columns "
            "WHERE database = {db:String} AND table = {t:String} ORDER BY position",
            parameters={"db": database or self._client.database or "default", "t": name},
        )
        columns = {
            row[0]: Column(row[0], row[1], has_default=bool(row[2])) for row in result.result_rows
        }
        if not columns:
            raise ClickHouseError(f"INSERT INTO {table}: no table {table}", code=60)
        with self._columns_lock:
            self._columns[table] = columns
        return columns


#: The names code written against the two former backends imports; both are this one class.
ChdbClickHouse = ServerClickHouse = ConnectClickHouse


def _check_param(name: str, value: Any) -> None:
    """A naive datetime would be read in some zone nobody chose: refuse it."""
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ClickHouseError(f"naive datetime {value!r} as query parameter {name}; use UTC")
    if isinstance(value, list | tuple):
        for item in value:
            _check_param(name, item)


def connect(url: str) -> ClickHouse:
    """chdb://PATH -> embedded ClickHouse; http(s)://user:pass@host:port/db -> a server."""
    if url.startswith("chdb://") and len(url) > len("chdb://"):
        return _connect_embedded(url.removeprefix("chdb://"))
    if url.startswith(("http://", "https://")):
        return _connect_server(url)
    raise ClickHouseError(
        f"ClickHouse URL {url!r}: use chdb://PATH or http(s)://user:pass@host:port/db"
    )


def _connect_embedded(path: str) -> ConnectClickHouse:
    import clickhouse_connect

    if path == ":memory:":
        dsn = "chdb://memory"
    else:
        folder = Path(path).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        dsn = f"chdb://{folder}"  # chdb:///abs/path: the whole path is the location
    # chdb allows one data folder per process and one process per folder
    busy = f"cannot open embedded ClickHouse at {path!r} (is another process, e.g. `ecrm up`, using it?)"
    with _named_errors(busy):
        return ConnectClickHouse(clickhouse_connect.get_client(dsn=dsn, tz_mode="aware"))


def connect_read_only_embedded(folder: Path) -> ConnectClickHouse:
    """Another handle on the chdb folder this process already opened, refusing every write
    and DDL (ClickHouse's ``readonly = 2``): what streams/clickhouse_served.py answers with."""
    import clickhouse_connect

    with _named_errors(f"read-only embedded ClickHouse at {str(folder)!r}"):
        client = clickhouse_connect.get_client(
            dsn=f"chdb://{folder.resolve()}", tz_mode="aware", settings={"readonly": 2}
        )
    return ConnectClickHouse(client)


def server_client(params: Mapping[str, Any]) -> Any:
    """A clickhouse-connect client for a server; aware UTC datetimes, no HTTP session (so
    threads can share it: a session runs one query at a time)."""
    import clickhouse_connect

    return clickhouse_connect.get_client(**params, tz_mode="aware", autogenerate_session_id=False)


def _connect_server(url: str) -> ConnectClickHouse:
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
    with _named_errors(f"ClickHouse at {where['host']}:{where['port']}"):
        admin = server_client(where)
        admin.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        admin.close()
        return ConnectClickHouse(server_client({**where, "database": database}))


_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime64(3, 'UTC'))
ENGINE = MergeTree ORDER BY version SETTINGS non_replicated_deduplication_window = 1000
"""


#: The tables whose rows may expire (ECRM_CLICKHOUSE_TTL_DAYS), by the time column they
#: expire on. Not `profile_snapshots` (one row per customer: their current state) nor
#: `erasures` (the audit of erasures is kept).
TTL_COLUMNS = {
    "events": "ts",
    "segment_changes": "at",
    "rule_decisions": "decided_at",
    "identity_merges": "merged_at",
    "points_ledger": "at",
    "tag_changes": "at",
    "level_changes": "at",
    "deliveries": "at",
}


def apply_ttls(ch: ClickHouse, days: Mapping[str, int]) -> list[str]:
    """Make each table's TTL what `days` says (table -> days to keep; a table not named keeps
    its rows forever): set where it differs, removed where it is no longer wanted. Returns
    the tables changed. An unchanged TTL is left alone (a change rewrites the table's parts)."""
    changed = []
    for table, column in TTL_COLUMNS.items():
        rows = ch.query(
            "SELECT engine_full FROM system.tables "
            "WHERE database = currentDatabase() AND name = {t:String}",
            {"t": table},
        )
        engine = rows[0]["engine_full"] if rows else ""
        keep = days.get(table)
        if keep:
            wanted = f"TTL toDateTime({column}) + toIntervalDay({int(keep)})"
            if wanted not in engine:
                ch.execute(
                    f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) + INTERVAL {int(keep)} DAY"
                )
                changed.append(table)
        elif " TTL " in engine:
            ch.execute(f"ALTER TABLE {table} REMOVE TTL")
            changed.append(table)
    return changed


def migrate(
    ch: ClickHouse, directory: Path = SQL_DIR, ttl_days: Mapping[str, int] | None = None
) -> list[str]:
    """Apply clickhouse/NNN_*.sql not yet recorded in schema_migrations, in order; then, with
    `ttl_days` (ECRM_CLICKHOUSE_TTL_DAYS), the tables' TTLs (`apply_ttls`).

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
    if ttl_days is not None:
        apply_ttls(ch, ttl_days)
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
