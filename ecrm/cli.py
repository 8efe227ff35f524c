"""The `ecrm` command: assembles the app from the rooms below and runs one job.

Each command is a module of ecrm/commands/ (`add_parser(sub)`, `run(args, settings)`); this
file only builds the parser from them, reads the settings once and reports errors. It imports
only the chosen command's module, and the settings once a command was chosen, so `ecrm
--help` and light commands start fast (nothing here pulls in pydantic-settings, Redis or
Faust). Outside `ecrm up`, `ecrm demo` and `ecrm bench`, the running stack's ECRM_* settings
(ECRM_DATA_DIR/ecrm.env, ecrm/running.py) fill in what the environment does not set. A
service that cannot be reached is one line saying what to start or set, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import import_module
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ecrm.commands import COMMANDS, LISTED
from schemas.errors import EcrmError

PROG = "ecrm"
#: Commands that start a stack of their own rather than reach the running one.
_OWN_STACK = frozenset({"up", "demo", "bench", "env"})
#: Services whose logs matter while they run; other commands report failures themselves,
#: as one line, so the clients' retry chatter (Kafka, HTTP) is kept out of their output.
_SERVICES = frozenset({"worker", "api"})
#: Exit status of a command that could not reach a service (EX_UNAVAILABLE).
UNREACHABLE = 69


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Real-time CRM engine for online shops")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name in COMMANDS:
        listed = LISTED.get(name)
        if listed is not None and chosen not in listed:
            for command, text in listed.items():  # listed in --help, not imported
                sub.add_parser(command, help=text)
            continue
        module = import_module(f"ecrm.commands.{name}")
        before = set(sub.choices)
        module.add_parser(sub)
        for added in set(sub.choices) - before:
            sub.choices[added].set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command not in _SERVICES:
        # urllib3.connectionpool: clickhouse-connect sets "urllib3" to WARNING when imported
        for chatty in ("kafka", "urllib3.connectionpool", "clickhouse_connect"):
            logging.getLogger(chatty).setLevel(logging.CRITICAL)
    settings: Any = None
    try:
        if args.command not in _OWN_STACK:
            _reach_running_stack()
        settings = _settings()
        code: int = args.run(args, settings)
        return code
    except EcrmError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = unreachable(exc, settings)
        if message is None:
            raise
        print(f"{PROG}: {message}", file=sys.stderr)
        return UNREACHABLE


def _settings() -> Any:
    """The settings; a value that is not one is one line naming the variable."""
    from pydantic import ValidationError

    from streams.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"ECRM_{'_'.join(str(p) for p in error['loc']).upper()}={error.get('input')!r}: "
            f"{error['msg']}"
            if error["loc"]
            else error["msg"]
            for error in exc.errors()
        )
        raise EcrmError(f"bad setting: {problems}") from None


def _reach_running_stack() -> None:
    """The running (or kept) stack's ECRM_* settings, where the environment sets none."""
    from ecrm.running import read_running

    found = read_running(Path(os.environ.get("ECRM_DATA_DIR") or ".ecrm"))
    if found is None:
        return
    for name, value in found.env.items():
        os.environ.setdefault(name, value)
    if found.kept:
        print(f"{PROG}: reading a kept demo's data ({found.path})", file=sys.stderr)


def unreachable(exc: BaseException, settings: Any) -> str | None:
    """One line for a service that cannot be reached (Redis, Kafka, ClickHouse), saying what
    to start or set; None for any other error. Looks only at libraries already imported."""
    start = "start `ecrm up` (or `ecrm demo --serve`) from here"
    redis = sys.modules.get("redis.exceptions")
    if redis is not None and isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        where = _where(settings.redis_url if settings else "")
        return f"can't reach Redis at {where} ({exc}): {start}, or set ECRM_REDIS_URL"
    kafka_types = tuple(
        kind
        for module_name, names in (
            ("kafka.errors", ("NoBrokersAvailable", "KafkaConnectionError", "KafkaTimeoutError")),
            ("aiokafka.errors", ("KafkaConnectionError",)),
        )
        for name in names
        if isinstance(kind := getattr(sys.modules.get(module_name), name, None), type)
    )
    if kafka_types and isinstance(exc, kafka_types):
        where = settings.kafka_bootstrap if settings else "the broker"
        return f"can't reach Kafka at {where} ({exc}): {start}, or set ECRM_KAFKA_BOOTSTRAP"
    clickhouse = sys.modules.get("clickhouse_connect.driver.exceptions")
    if clickhouse is not None and isinstance(exc, clickhouse.OperationalError):
        where = _where(settings.clickhouse_url if settings else "")
        return f"can't reach ClickHouse at {where} ({exc}): {start}, or set ECRM_CLICKHOUSE_URL"
    return None


def _where(url: str) -> str:
    """host:port of a service URL, without its credentials."""
    parts = urlsplit(url)
    if parts.hostname is None:
        return url or "(unset)"
    return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
