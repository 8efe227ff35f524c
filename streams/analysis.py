"""ClickHouse opened for analysis (named queries, audiences, backtests, exports): a server
read-only; embedded chdb directly when no other process holds its folder, else through the
process that holds it (streams/clickhouse_served.py); and query parameters from text."""

from __future__ import annotations

import fcntl
from collections.abc import Sequence
from pathlib import Path

from schemas.errors import ClickHouseError
from streams.clickhouse import ClickHouse, connect, migrate
from streams.clickhouse_readonly import connect_read_only
from streams.clickhouse_served import ServedClickHouse, served_socket
from streams.named_queries import NamedQueryError


def parse_params(pairs: Sequence[str]) -> dict[str, str]:
    """``["since=2024-05-01", "limit=10"]`` -> ``{"since": "2024-05-01", "limit": "10"}``."""
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise NamedQueryError(f"--param {pair!r}: write NAME=VALUE, e.g. since=2024-05-01")
        if name in params:
            raise NamedQueryError(f"--param {name} given twice")
        params[name] = value
    return params


def open_for_analysis(url: str) -> ClickHouse:
    """ClickHouse at url. A server is opened read-only (no DDL: analysts may not run any).
    Embedded: the folder must exist. While another process holds it (`ecrm up`, `ecrm
    demo`) the queries go to that process, read-only; else it is opened here and its schema
    brought up to date, so the analysts' views exist even in a folder an older ecrm made."""
    if not url.startswith("chdb://"):
        return connect_read_only(url)
    path = Path(url.removeprefix("chdb://"))
    if not path.is_dir():
        raise ClickHouseError(
            f"no embedded ClickHouse at {str(path)!r} (ECRM_CLICKHOUSE_URL={url}); "
            "`ecrm up` creates it (`ecrm demo` uses a temporary folder; with --keep it stays "
            "and `ecrm sql` run there reads it), or point ECRM_CLICKHOUSE_URL elsewhere"
        )
    if held_by_another_process(path):
        return _served(path)
    ch = connect(url)
    migrate(ch)
    return ch


def _served(path: Path) -> ClickHouse:
    """The folder's owner (`ecrm up`, `ecrm demo`) answers our queries on its socket."""
    try:
        return ServedClickHouse(served_socket(path))
    except ClickHouseError as exc:
        raise ClickHouseError(
            f"the embedded ClickHouse at {str(path)!r} is in use by another process that "
            f"serves no queries ({exc}): `ecrm up` and `ecrm demo` serve them once they have "
            "started; an `ecrm sink retry` or an older ecrm does not. Wait for it or stop it, "
            "or run ClickHouse as a server (docker compose) and set "
            "ECRM_CLICKHOUSE_URL=http://analyst:...@host:8123/ecrm"
        ) from None


def held_by_another_process(path: Path) -> bool:
    """Whether a running ClickHouse (chdb in `ecrm up`, or a server) holds the data folder:
    it keeps an exclusive flock on the folder's `status` file while it runs."""
    status = path / "status"
    if not status.is_file():
        return False
    with status.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False
