"""`ecrm membership check FILE`: a membership programme file checked, each mistake naming
its field (the same standard as `ecrm rules check`)."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

from schemas.membership import MembershipError, MembershipSyntaxError, Programme, load_programme
from schemas.rule_values import format_duration
from streams.settings import Settings


def _span(span: timedelta | str | None) -> str:
    if span is None:
        return "none"
    return span if isinstance(span, str) else format_duration(span)


def add_parser(sub: argparse._SubParsersAction) -> None:
    membership = sub.add_parser("membership", help="the membership programme file")
    membership_sub = membership.add_subparsers(dest="membership_command", required=True)
    check = membership_sub.add_parser("check", help="validate a membership programme file")
    check.add_argument("file", type=Path)


def describe(prog: Programme) -> str:
    """What the programme says, in a few lines a shop owner can check."""
    points, levels = prog.points, prog.levels
    expiry = points.expiry
    lapse = {
        "rolling": f"each lot {_span(expiry.after)} after it is earned",
        "calendar": f"at the end of the year {expiry.years_after} after the one earned",
        "inactivity": f"the whole balance {_span(expiry.after)} after the last paid order",
        "never": "never",
    }[expiry.mode]
    lines = [
        f"points: {points.earn.per_yuan} per yuan ({points.earn.rounding}), pending "
        f"{_span(points.pending)}, lapse {lapse}, refunds {points.refund}",
        f"levels by {levels.metric} over {_span(levels.window)}, term {_span(levels.term)}, "
        f"grace {_span(levels.grace)}, downgrade {levels.downgrade}:",
    ]
    for level in levels.ladder:
        benefits = ", ".join(f"{k}={v}" for k, v in level.benefits.items()) or "no benefits"
        lines.append(
            f"  {level.id} ({level.name or level.id}): from {level.upgrade}, keep "
            f"{level.keep_at}; {benefits}"
        )
    if prog.tags:
        lines.append(f"tags: {', '.join(prog.tags)}")
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        prog = load_programme(args.file)
    except MembershipSyntaxError as exc:
        print(exc, file=sys.stderr)
        return 2
    except MembershipError as exc:
        print(f"{args.file}: invalid\n{exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: valid\n{describe(prog)}")
    return 0
