"""The `ecrm` command: assembles the app from the rooms below and runs one job."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from schemas.errors import EcrmError
from streams.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecrm", description="Real-time CRM engine for online shops"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("up", help="start the embedded stack and print the ECRM_* settings")
    worker = sub.add_parser("worker", help="run the stream processor")
    worker.add_argument("--loglevel", default="warning")

    demo = sub.add_parser("demo", help="embedded stack + worker + synthetic traffic + summary")
    demo.add_argument("--customers", type=int, default=3000)
    demo.add_argument("--sessions", type=int, default=12000)
    demo.add_argument("--workers", type=int, default=1)

    bench = sub.add_parser("bench", help="measure throughput, lateness, freshness, sink, memory")
    bench.add_argument("--quick", action="store_true", help="a smoke run of under two minutes")
    bench.add_argument("--out", type=Path, default=Path("bench.json"))

    profile = sub.add_parser("profile", help="print a customer's live profile")
    profile.add_argument("customer_id")
    profile.add_argument("--json", action="store_true", help="print JSON")

    rules = sub.add_parser("rules", help="marketers' rules")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser("check", help="validate a rules file")
    check.add_argument("file", type=Path)

    schemas = sub.add_parser("schemas", help="JSON Schema of the contract's messages")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schemas_sub.add_parser("export", help="write one .schema.json per message")
    export.add_argument("dir", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return _run(args)
    except EcrmError as exc:
        print(f"ecrm: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "rules":
        from ecrm.rules_cli import check_rules

        code, message = check_rules(args.file)
        print(message, file=sys.stdout if code == 0 else sys.stderr)
        return code
    if args.command == "schemas":
        from schemas.jsonschema import export_json_schemas

        for path in export_json_schemas(args.dir):
            print(path)
        return 0
    settings = Settings()
    if args.command == "up":
        from ecrm.up import run_up
        from ecrm.worker import drain_clickhouse_while

        return run_up(settings, while_up=drain_clickhouse_while)
    if args.command == "worker":
        from ecrm.worker import run_worker

        return run_worker(settings, loglevel=args.loglevel)
    if args.command == "demo":
        from ecrm.demo import run_demo

        return run_demo(
            settings, customers=args.customers, sessions=args.sessions, workers=args.workers
        )
    if args.command == "bench":
        from ecrm.bench import run_bench

        return run_bench(settings, quick=args.quick, out=args.out)
    if args.command == "profile":
        from ecrm.profile_cmd import show_profile

        return show_profile(settings, args.customer_id, args.json)
    raise AssertionError(args.command)
