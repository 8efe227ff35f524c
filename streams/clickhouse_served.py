"""Embedded ClickHouse shared with the other processes of one machine, through its owner.

chdb allows one process per data folder, and `ecrm up` / `ecrm demo` hold theirs while they
run (the sink writes into it). So that `ecrm sql`, `ecrm rules backtest`, the exports and the
API can still read it, the owner serves queries on a unix socket beside the folder
(``FOLDER.sock``, e.g. ``.ecrm/clickhouse.sock``): `serve_queries` answers each query
through a read-only chdb handle of its own (ClickHouse's ``readonly = 2``: no INSERT, no
DDL), so the owner stays the one writer; `ServedClickHouse` is the client, the same
`ClickHouse` interface as a direct connection, and `streams.analysis.open_for_analysis`
picks it when another process holds the folder.

The rows cross as pickles, so a query answers with exactly the values (aware datetimes,
Decimals, dates, lists) it gives in the owner: the same output as on a stopped system.
Pickle runs code of the sender's choosing, so only a peer of the same user is answered
(the socket is mode 0600 and each connection's SO_PEERCRED uid is checked), and the client
talks only to a socket its own user owns: nobody crosses a user boundary.

Usage::

    with serve_queries("chdb://.ecrm/clickhouse"):  # in the owner, after it opened chdb
        ...
    ch = ServedClickHouse(served_socket(Path(".ecrm/clickhouse")))  # in any other process
    rows = ch.query("SELECT count() AS n FROM events")
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from schemas.errors import ClickHouseError
from streams.clickhouse import ConnectClickHouse, first_line

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">Q")
#: AF_UNIX paths are at most 107 bytes on Linux.
_MAX_SOCKET_PATH = 100
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


def served_socket(folder: Path) -> Path:
    """Where the owner of the chdb folder serves its queries: beside it, FOLDER.sock."""
    return folder.with_name(folder.name + ".sock")


class ServedClickHouse:
    """ClickHouse read through the process that owns an embedded chdb folder (see module
    docstring). Queries only: `execute` and `insert` are refused, the owner is the writer."""

    def __init__(self, path: Path, timeout_s: float = 600.0) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            owner = path.stat().st_uid
        except OSError as exc:
            raise ClickHouseError(f"no ecrm serves queries on {path}: {exc.strerror}") from exc
        if owner != os.getuid():
            raise ClickHouseError(f"{path} belongs to another user; not reading from it")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(_bindable(path))
        except OSError as exc:
            self._sock.close()
            raise ClickHouseError(f"no ecrm serves queries on {path}: {exc.strerror}") from exc

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            try:
                _send(self._sock, {"sql": sql, "params": params})
                answer = _receive(self._sock)
            except (OSError, EOFError) as exc:
                raise ClickHouseError(
                    f"{first_line(sql)}: the ecrm serving {self.path} went away ({exc})",
                    transient=True,
                ) from exc
        if answer["error"] is not None:
            raise ClickHouseError(
                answer["error"], code=answer["code"], transient=answer["transient"]
            )
        rows: list[dict[str, Any]] = answer["rows"]
        return rows

    def execute(self, sql: str) -> None:
        raise ClickHouseError(f"{first_line(sql)}: {self._read_only}")

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]], *, token: str) -> None:
        raise ClickHouseError(f"INSERT INTO {table}: {self._read_only}")

    def close(self) -> None:
        self._sock.close()

    @property
    def _read_only(self) -> str:
        return (
            f"read-only through the running ecrm that owns the embedded ClickHouse ({self.path}); "
            "stop it to change the data"
        )


@contextmanager
def serve_queries(url: str) -> Iterator[Path | None]:
    """Serve read-only queries on the chdb at `url` (chdb://FOLDER) to local processes of
    this user until the block ends; yields the socket's path (None when it cannot be bound,
    which is logged: the owner runs on, only unshared). Call it in the process that owns
    the folder, after its own connection opened chdb."""
    from streams.clickhouse import connect_read_only_embedded

    folder = Path(url.removeprefix("chdb://"))
    path = served_socket(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ch = connect_read_only_embedded(folder)
    server = None
    try:
        server = _bind(path, ch)
        if server is None:
            yield None
            return
        thread = threading.Thread(
            target=server.serve_forever, name="clickhouse-served", daemon=True
        )
        thread.start()
        try:
            yield path
        finally:
            server.shutdown()
            thread.join(timeout=5)
    finally:
        if server is not None:
            server.server_close()
            path.unlink(missing_ok=True)
        ch.close()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, where: str, ch: ConnectClickHouse) -> None:
        self.ch = ch
        super().__init__(where, _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        if _PEERCRED.unpack(creds)[1] != os.getuid():
            return  # another user: not a word
        while True:
            try:
                request = _receive(sock)
            except (OSError, EOFError):
                return
            answer: dict[str, Any] = {"rows": None, "error": None, "code": None, "transient": False}
            try:
                answer["rows"] = self.server.ch.query(request["sql"], request["params"])
            except ClickHouseError as exc:
                answer.update(error=str(exc), code=exc.code, transient=exc.transient)
            try:
                _send(sock, answer)
            except OSError:
                return


def _bind(path: Path, ch: ConnectClickHouse) -> _Server | None:
    where = _bindable(path)
    if len(where) > _MAX_SOCKET_PATH:
        log.warning("not serving queries: socket path %s is too long for a unix socket", path)
        return None
    path.unlink(missing_ok=True)  # left by an owner that died: we hold the folder now
    old = os.umask(0o177)  # the socket is born 0600
    try:
        return _Server(where, ch)
    except OSError as exc:
        log.warning("not serving queries on %s: %s", path, exc)
        return None
    finally:
        os.umask(old)


def _bindable(path: Path) -> str:
    """The shorter of the absolute and the relative spelling (unix socket paths are short)."""
    absolute = str(path.resolve())
    relative = os.path.relpath(absolute)
    return relative if len(relative) < len(absolute) else absolute


def _send(sock: socket.socket, value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LENGTH.pack(len(data)) + data)


def _receive(sock: socket.socket) -> Any:
    size = _LENGTH.unpack(_exactly(sock, _LENGTH.size))[0]
    return pickle.loads(_exactly(sock, size))  # noqa: S301 - a peer of our own user only


def _exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
