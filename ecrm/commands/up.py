"""`ecrm up`: keep the embedded stack running and print the ECRM_* settings that reach it."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from urllib.parse import urlsplit

from ecrm.running import remove_running, write_running
from streams.embedded import embedded_stack, port_is_free
from streams.settings import EMBEDDED_KAFKA, EMBEDDED_REDIS, Settings
from streams.topics import contract_topics, ensure_topics

#: Work done in this process while the stack is up (e.g. draining the ClickHouse outbox
#: into chdb, which only one process may open); it must return soon after `stop` is set.
WhileUp = Callable[[Settings, threading.Event], None]
#: How long the hook gets to finish after `stop` is set before the stack goes down anyway.
HOOK_STOP_TIMEOUT_S = 30.0


def run_up(
    settings: Settings,
    while_up: WhileUp | None = None,
    *,
    stop: threading.Event | None = None,
) -> int:
    """Run the stack until SIGINT/SIGTERM (or `stop` is set); return the exit status.

    Listens on the documented embedded ports, or on free ones when those are taken —
    the printed settings always say where. A `while_up` that raises stops the stack and
    the error propagates.
    """
    stop = stop or threading.Event()
    kafka_port = _default_port(urlsplit(f"//{EMBEDDED_KAFKA}").port)
    redis_port = _default_port(urlsplit(EMBEDDED_REDIS).port)
    with (
        _stop_on_signals(stop),
        embedded_stack(
            settings.data_dir,
            kafka_port=kafka_port,
            redis_port=redis_port,
            partitions=settings.partitions,
        ) as stack,
    ):
        live = stack.settings(settings)
        ensure_topics(live.kafka_bootstrap, list(contract_topics(live).values()), live.partitions)
        for name, value in live.as_env().items():
            print(f"{name}={value}")
        sys.stdout.flush()
        found = write_running(stack.data_dir, live.as_env(), "ecrm up")
        print(
            f"ecrm up: embedded stack running; Ctrl-C to stop. Other ecrm commands run here "
            f"reach it ({found}; `ecrm env` prints it)",
            file=sys.stderr,
            flush=True,
        )

        hook = _HookThread(while_up, live, stop) if while_up else None
        if hook:
            hook.start()
        failure = None
        while not stop.wait(0.2):
            failure = stack.failed()
            if failure or (hook and hook.error):
                break
        stop.set()
        remove_running(stack.data_dir)
        if hook:
            hook.join(timeout=HOOK_STOP_TIMEOUT_S)
            if hook.is_alive():
                print("ecrm up: while_up hook ignored stop; stopping anyway", file=sys.stderr)
            if hook.error:
                raise hook.error
    if failure:
        print(f"ecrm up: {failure}", file=sys.stderr)
        return 1
    return 0


def _default_port(port: int | None) -> int | None:
    """The documented port when free, else None (= any free port)."""
    return port if port is not None and port_is_free(port) else None


class _HookThread(threading.Thread):
    """Runs the `while_up` hook and keeps what it raised for the main thread."""

    def __init__(self, hook: WhileUp, settings: Settings, stop: threading.Event) -> None:
        super().__init__(name="ecrm-up-hook", daemon=True)
        self._hook, self._settings, self._stop_event = hook, settings, stop
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self._hook(self._settings, self._stop_event)
        except Exception as e:  # handed to the main thread, which re-raises it
            self.error = e


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into `stop.set()` (main thread only), restoring the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("up", help="start the embedded stack and print the ECRM_* settings")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return run_up(settings, while_up=own_clickhouse)


def own_clickhouse(settings: Settings, stop: threading.Event) -> None:
    """The embedded ClickHouse is this process's: drain the outbox into it, and answer the
    other processes' queries (streams/clickhouse_served.py) meanwhile."""
    from agents.worker import drain_clickhouse_while
    from streams.clickhouse_served import serve_queries

    if not settings.clickhouse_url.startswith("chdb://"):  # a server: it serves everyone
        drain_clickhouse_while(settings, stop)
        return
    with serve_queries(settings.clickhouse_url):
        drain_clickhouse_while(settings, stop)
