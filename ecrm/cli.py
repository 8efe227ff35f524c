"""The `ecrm` command: assembles the app from the rooms below and runs one job.

Each command is a module of ecrm/commands/ (`add_parser(sub)`, `run(args, settings)`); this
file only builds the parser from them, reads the settings once and reports errors.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ecrm.commands import command_modules
from schemas.errors import EcrmError
from streams.settings import Settings

PROG = "ecrm"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Real-time CRM engine for online shops")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in command_modules():
        before = set(sub.choices)
        module.add_parser(sub)
        for name in set(sub.choices) - before:
            sub.choices[name].set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        code: int = args.run(args, Settings())
        return code
    except EcrmError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
