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
    bench.add_argument(
        "--load", type=int, default=5000, help="background events/s while timing lateness"
    )
    bench.add_argument(
        "--only", choices=("throughput", "lateness", "sink", "scale-out"), help="one phase"
    )

    profile = sub.add_parser("profile", help="print a customer's live profile")
    who = profile.add_mutually_exclusive_group(required=True)
    who.add_argument("customer_id", nargs="?")
    who.add_argument(
        "--buyer", metavar="NAME", help="an imported buyer's name, hashed with ECRM_PII_SECRET"
    )
    profile.add_argument("--json", action="store_true", help="print JSON")

    imports = sub.add_parser("import", help="bring a shop's history in (docs/import.md)")
    imports_sub = imports.add_subparsers(dest="import_command", required=True)
    orders = imports_sub.add_parser(
        "orders", help="a Taobao/Tmall order export, a CSV with a mapping, or JSON Lines"
    )
    orders.add_argument("file", type=Path)
    orders.add_argument("--format", default="auto", choices=("auto", "taobao", "csv", "jsonl"))
    orders.add_argument("--mapping", type=Path, help="YAML column mapping of a generic CSV")
    orders.add_argument("--rejects", type=Path, help="reject file (default FILE.rejects.jsonl)")
    orders.add_argument(
        "--shop-id", help="shop_id of every event (default: the file's, or default)"
    )
    orders.add_argument(
        "--all-history", action="store_true", help="also orders older than the RFM window"
    )
    orders.add_argument("--dry-run", action="store_true", help="read and check, send nothing")
    orders.add_argument("--no-progress", action="store_true", help="no progress bar")

    rules = sub.add_parser("rules", help="marketers' rules")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser("check", help="validate a rules file")
    check.add_argument("file", type=Path)
    backtest = rules_sub.add_parser(
        "backtest", help="what a rules file would have done over the history in ClickHouse"
    )
    backtest.add_argument("file", type=Path)
    backtest.add_argument("--since", default="30d", help="30d, 12h, or an ISO date (shop's zone)")
    backtest.add_argument("--until", default=None, help="same forms; default: now")
    backtest.add_argument(
        "--warm-up", default=None, help="replay this much earlier history first, unreported"
    )
    backtest.add_argument("--json", action="store_true", help="print JSON")

    sql = sub.add_parser("sql", help="run an analysts' named query (docs/clickhouse.md)")
    sql.add_argument("name", nargs="?", help="the query: clickhouse/queries/NAME.sql")
    sql.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="a query parameter"
    )
    sql.add_argument("--format", default="table", choices=("table", "csv", "json"))
    sql.add_argument("--list", action="store_true", help="list the queries and what they answer")

    audience = sub.add_parser(
        "audience", help="select customers by their profiles (docs/campaigns.md)"
    )
    audience_sub = audience.add_subparsers(dest="audience_command", required=True)
    export_audience = audience_sub.add_parser("export", help="the selected customers as CSV")
    _selection_args(export_audience, with_file=False)
    export_audience.add_argument("--out", type=Path, help="CSV file to write (default: stdout)")

    campaign = sub.add_parser(
        "campaign", help="batch campaigns through the rules (docs/campaigns.md)"
    )
    campaign_sub = campaign.add_subparsers(dest="campaign_command", required=True)
    send = campaign_sub.add_parser("send", help="one campaign event per selected customer")
    send.add_argument("campaign_id", help="the campaign, as rules name it: where: {campaign: ID}")
    _selection_args(send, with_file=True)
    send.add_argument("--dry-run", action="store_true", help="select and report, send nothing")
    send.add_argument("--no-progress", action="store_true", help="no progress bar")

    schemas = sub.add_parser("schemas", help="JSON Schema of the contract's messages")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schemas_sub.add_parser("export", help="write one .schema.json per message")
    export.add_argument("dir", type=Path)
    return parser


def _selection_args(parser: argparse.ArgumentParser, *, with_file: bool) -> None:
    """Who is selected: exactly one of an audience file, a where-clause or a named query."""
    how = parser.add_mutually_exclusive_group(required=True)
    if with_file:
        how.add_argument("--audience", type=Path, metavar="FILE.csv", help="CSV with customer_id")
    how.add_argument(
        "--where",
        metavar="CONDITION",
        help="over profiles_latest, e.g. \"segment = 'important_keep' AND monetary >= 500\"",
    )
    how.add_argument("--query", metavar="NAME", help="a named query returning customer_id")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="a query parameter"
    )


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
    if args.command == "rules" and args.rules_command == "backtest":
        from ecrm.backtest_cmd import run_backtest_cmd

        return run_backtest_cmd(
            Settings(),
            args.file,
            since=args.since,
            until=args.until,
            warm_up=args.warm_up,
            as_json=args.json,
        )
    if args.command == "rules":
        from ecrm.rules_cli import check_rules

        code, message = check_rules(args.file)
        print(message, file=sys.stdout if code == 0 else sys.stderr)
        return code
    if args.command == "audience":
        from ecrm.audience_cmd import run_audience_export

        return run_audience_export(
            Settings(), where=args.where, query=args.query, params=args.param, out_path=args.out
        )
    if args.command == "campaign":
        from ecrm.campaign_cmd import run_campaign_send

        return run_campaign_send(
            Settings(),
            args.campaign_id,
            audience=args.audience,
            where=args.where,
            query=args.query,
            params=args.param,
            dry_run=args.dry_run,
            progress=False if args.no_progress else None,
        )
    if args.command == "schemas":
        from schemas.jsonschema import export_json_schemas

        for path in export_json_schemas(args.dir):
            print(path)
        return 0
    if args.command == "sql":
        from ecrm.sql_cmd import list_text, run_sql

        if args.list:
            print(list_text(), end="")
            return 0
        return run_sql(Settings(), args.name, args.param, args.format)
    settings = Settings()
    if args.command == "up":
        from agents.worker import drain_clickhouse_while
        from ecrm.up import run_up

        return run_up(settings, while_up=drain_clickhouse_while)
    if args.command == "worker":
        from agents.worker import run_worker

        return run_worker(settings, loglevel=args.loglevel)
    if args.command == "demo":
        from ecrm.demo import run_demo

        return run_demo(
            settings, customers=args.customers, sessions=args.sessions, workers=args.workers
        )
    if args.command == "bench":
        from ecrm.bench import run_bench

        return run_bench(settings, quick=args.quick, out=args.out, load=args.load, only=args.only)
    if args.command == "profile":
        from ecrm.profile_cmd import show_profile

        customer_id = args.customer_id
        if args.buyer is not None:
            from schemas.pii import customer_id_for, normalized_name

            if not normalized_name(args.buyer):
                raise EcrmError("--buyer needs a name")
            customer_id = customer_id_for(args.buyer, settings.pii_key())
        return show_profile(settings, customer_id, args.json)
    if args.command == "import":
        from ecrm.import_cmd import run_import

        return run_import(
            settings,
            args.file,
            fmt=args.format,
            mapping_path=args.mapping,
            rejects_path=args.rejects,
            shop_id=args.shop_id,
            all_history=args.all_history,
            dry_run=args.dry_run,
            progress=False if args.no_progress else None,
        )
    raise AssertionError(args.command)
