"""One module per `ecrm` command, each with `add_parser(sub)` and `run(args, settings)`.

A command is a thin shell: what it reads or computes lives a floor below (agents/, streams/),
so the CLI, the API and the tests share it. To add a command, write its module here and name
it in `COMMANDS`, and its name and help line in `LISTED`; ecrm/cli.py builds the parser from
these and dispatches to `run`. Only the chosen command's module is imported (`ecrm --help`
and light commands start fast: no Faust, Redis or FastAPI for `ecrm sql`); a module missing
from `LISTED` still works, imported whatever the command.
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
    "env",
)

#: The command names `ecrm --help` lists, by module, with their help line (each module's
#: `add_parser` says the same: tests/unit/test_cli.py checks it).
LISTED: dict[str, dict[str, str]] = {
    "demo": {"demo": "embedded stack + worker + synthetic traffic + summary"},
    "up": {"up": "start the embedded stack and print the ECRM_* settings"},
    "worker": {"worker": "run the stream processor"},
    "deliver": {
        "deliver": "send the actions on ecrm.actions through their channels (several may run at once)",
        "delivery": "the delivery file: channels, providers, templates",
    },
    "profile": {"profile": "print a customer's live profile"},
    "customer": {"customer": "erase, export, consent: a customer's rights"},
    "imports": {"import": "bring a shop's history in (docs/import.md)"},
    "rules": {"rules": "marketers' rules"},
    "membership": {"membership": "the membership programme file"},
    "member": {"member": "a customer's membership: level, points, tags"},
    "points": {"points": "manual points adjustments"},
    "tags": {"tags": "manual tags"},
    "sql": {"sql": "run an analysts' named query (docs/clickhouse.md)"},
    "audience": {"audience": "select customers by their profiles (docs/campaigns.md)"},
    "campaign": {"campaign": "batch campaigns through the rules (docs/campaigns.md)"},
    "relay": {"relay": "the Kafka relay: messages it could not send"},
    "sink": {"sink": "the ClickHouse sink: rows refused, and their replay"},
    "bench": {"bench": "measure throughput, lateness, freshness, sink, memory"},
    "schemas": {"schemas": "JSON Schema of the contract's messages"},
    "api": {"api": "HTTP ingestion (Segment-compatible), profiles, dashboard"},
    "env": {"env": "print the ECRM_* settings of the running stack (ecrm up, ecrm demo --serve)"},
}


def command_modules() -> list[ModuleType]:
    return [import_module(f"ecrm.commands.{name}") for name in COMMANDS]
