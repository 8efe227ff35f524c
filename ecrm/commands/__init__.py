"""One module per `ecrm` command, each with `add_parser(sub)` and `run(args, settings)`.

A command is a thin shell: what it reads or computes lives a floor below (agents/, streams/),
so the CLI, the API and the tests share it. To add a command, write its module here and name
it in `COMMANDS`; ecrm/cli.py builds the parser from this list and dispatches to `run`.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

#: `ecrm --help` lists the commands in this order.
COMMANDS = (
    "demo",
    "up",
    "worker",
    "deliver",
    "profile",
    "customer",
    "imports",
    "rules",
    "membership",
    "member",
    "points",
    "tags",
    "sql",
    "audience",
    "campaign",
    "relay",
    "sink",
    "bench",
    "schemas",
    "api",
)


def command_modules() -> list[ModuleType]:
    return [import_module(f"ecrm.commands.{name}") for name in COMMANDS]
