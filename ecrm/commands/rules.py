"""`ecrm rules check FILE` and `ecrm rules backtest FILE`: a marketers' rules file checked, or
replayed over the history in ClickHouse (ecrm/commands/backtest.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.rules.check import check_rules
from streams.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    rules = sub.add_parser("rules", help="marketers' rules")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser("check", help="validate a rules file")
    check.add_argument("file", type=Path)
    check.add_argument(
        "--delivery",
        type=Path,
        default=None,
        help="also refuse a rule whose channel has no provider or template in this delivery "
        "file, or whose SMS variables do not fit (docs/delivery.md)",
    )
    backtest = rules_sub.add_parser(
        "backtest", help="what a rules file would have done over the history in ClickHouse"
    )
    backtest.add_argument("file", type=Path)
    backtest.add_argument("--since", default="30d", help="30d, 12h, or an ISO date (shop's zone)")
    backtest.add_argument("--until", default=None, help="same forms; default: now")
    backtest.add_argument(
        "--warm-up",
        default=None,
        help="replay this much earlier history first, unreported (default 90d; none: start empty)",
    )
    backtest.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.rules_command == "backtest":
        from ecrm.commands.backtest import run_backtest_cmd

        return run_backtest_cmd(
            settings,
            args.file,
            since=args.since,
            until=args.until,
            warm_up=args.warm_up,
            as_json=args.json,
        )
    code, message = check_rules(args.file)
    if code == 0 and args.delivery is not None:
        from ecrm.commands.deliver import check_delivery

        code, delivered = check_delivery(args.delivery, args.file)
        message = f"{message}\n{delivered}"
    print(message, file=sys.stdout if code == 0 else sys.stderr)
    return code
