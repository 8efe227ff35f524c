"""`ecrm deliver` (send every action through its channel; run several) and `ecrm delivery check
FILE` (validate a delivery file, and with --rules, that every rule's channel can be sent)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.rules.check import EXIT_INVALID, EXIT_UNREADABLE, EXIT_VALID
from schemas.errors import DeliveryError
from streams.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(
        "deliver",
        help="send the actions on ecrm.actions through their channels (several may run at once)",
    )
    delivery = sub.add_parser("delivery", help="the delivery file: channels, providers, templates")
    delivery_sub = delivery.add_subparsers(dest="delivery_command", required=True)
    check = delivery_sub.add_parser("check", help="validate a delivery file")
    check.add_argument("file", type=Path)
    check.add_argument(
        "--rules", type=Path, default=None, help="also check that this rules file's actions fit it"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "deliver":
        from agents.delivery.run import run_deliver

        return run_deliver(settings)
    code, message = check_delivery(args.file, args.rules)
    print(message, file=sys.stdout if code == 0 else sys.stderr)
    return code


def check_delivery(path: Path, rules_path: Path | None = None) -> tuple[int, str]:
    """(exit code, message), as `ecrm rules check` answers."""
    from agents.delivery.render import problems_of_rules
    from schemas.delivery import load_delivery
    from schemas.rules import load_rules

    try:
        deliver = load_delivery(path)
    except DeliveryError as exc:
        return EXIT_INVALID, str(exc)
    lines = [
        f"{path}: valid, {len(deliver.providers)} providers, {len(deliver.templates)} templates",
        *(f"  {channel} -> {name}" for channel, name in sorted(deliver.channels.items())),
    ]
    if rules_path is not None:
        problems = problems_of_rules(deliver, load_rules(rules_path))
        if problems:
            return EXIT_INVALID, "\n".join(
                [f"{rules_path}: {len(problems)} problem{'s' * (len(problems) != 1)}", *problems]
            )
        lines.append(f"{rules_path}: every action can be delivered")
    return EXIT_VALID, "\n".join(lines)


__all__ = ["EXIT_UNREADABLE", "check_delivery"]
