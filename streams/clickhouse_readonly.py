"""A ClickHouse server opened the way an analyst may: no DDL at all.

`streams.clickhouse.connect` creates the database if it is missing, which a `readonly = 1`
user (the compose file's `analyst`) is refused; `ecrm sql` opens servers through here instead.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from schemas.errors import ClickHouseError
from streams.clickhouse import ConnectClickHouse, server_client

_DATABASE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def server_params(url: str) -> dict[str, Any]:
    """clickhouse-connect's client arguments for ``http(s)://user:pass@host:port/db``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ClickHouseError(f"ClickHouse URL {url!r}: not an http(s):// server URL")
    database = unquote(parts.path.strip("/")) or "default"
    if not set(database) <= _DATABASE_CHARS or database[0].isdigit():
        raise ClickHouseError(f"ClickHouse URL {url!r}: bad database name {database!r}")
    secure = parts.scheme == "https"
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port or (8443 if secure else 8123),
        "username": unquote(parts.username or "default"),
        "password": unquote(parts.password or ""),
        "secure": secure,
        "database": database,
    }


def connect_read_only(url: str) -> ConnectClickHouse:
    """The server at url, its database taken as it is (an unknown one is an error)."""
    from clickhouse_connect.driver.exceptions import Error

    params = server_params(url)
    try:
        client = server_client(params)
    except Error as exc:
        where = f"{params['host']}:{params['port']}/{params['database']}"
        raise ClickHouseError(
            f"can't reach ClickHouse at {where} as {params['username']} ({exc}): start it, "
            "or set ECRM_CLICKHOUSE_URL"
        ) from exc
    return ConnectClickHouse(client)
