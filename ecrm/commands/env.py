"""`ecrm env`: the ECRM_* settings of the stack running from here (`ecrm up`, `ecrm demo
--serve`), as they wrote them in ECRM_DATA_DIR/ecrm.env (ecrm/running.py); for another shell
or another directory: `eval "$(ecrm env --export)"`."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import TextIO

from ecrm.running import read_running
from schemas.errors import EcrmError
from streams.settings import Settings


def show_env(settings: Settings, *, export: bool, out: TextIO = sys.stdout) -> int:
    found = read_running(settings.data_dir)
    if found is None:
        raise EcrmError(
            f"nothing runs on {settings.data_dir} (no live {settings.data_dir / 'ecrm.env'}): "
            "start `ecrm up` or `ecrm demo --serve` from here, or set ECRM_DATA_DIR to theirs"
        )
    if found.kept:
        print(f"# {found.path}: a kept demo's data, nothing running", file=sys.stderr)
    for name, value in found.env.items():
        out.write(f"export {name}={shlex.quote(value)}\n" if export else f"{name}={value}\n")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    env = sub.add_parser(
        "env",
        help="print the ECRM_* settings of the running stack (ecrm up, ecrm demo --serve)",
    )
    env.add_argument(
        "--export", action="store_true", help="as shell `export NAME='VALUE'` lines, for eval"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    return show_env(settings, export=args.export)
