"""`ecrm points adjust CUSTOMER ±N --reason … --request-id …`: a manual adjustment, sent on
`ecrm.points` so the worker applies it in order with everything else, once per request id."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from ecrm.commands.tags import send_request
from streams.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    points = sub.add_parser("points", help="manual points adjustments")
    points_sub = points.add_subparsers(dest="points_command", required=True)
    adjust = points_sub.add_parser("adjust", help="credit (+N) or debit (-N) a member's points")
    adjust.add_argument("customer_id")
    adjust.add_argument("points", type=int, help="+N or -N")
    adjust.add_argument("--reason", required=True)
    adjust.add_argument(
        "--request-id", required=True, help="the idempotency key: the same id applies once"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    request = {
        "event_id": args.request_id,
        "customer_id": args.customer_id,
        "ts": datetime.now(UTC).isoformat(),
        "kind": "adjust",
        "points": args.points,
        "reason": args.reason,
    }
    send_request(settings, "points", request)
    print(f"sent: adjust {args.customer_id} by {args.points:+d} (request {args.request_id})")
    return 0
