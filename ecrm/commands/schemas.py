"""`ecrm schemas export DIR`: JSON Schema of every event and output message of the contract."""

from __future__ import annotations

import argparse
from pathlib import Path

from schemas.jsonschema import export_json_schemas
from streams.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    schemas = sub.add_parser("schemas", help="JSON Schema of the contract's messages")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schemas_sub.add_parser("export", help="write one .schema.json per message")
    export.add_argument("dir", type=Path)


def run(args: argparse.Namespace, settings: Settings) -> int:
    for path in export_json_schemas(args.dir):
        print(path)
    return 0
