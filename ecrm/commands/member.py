"""`ecrm member show CUSTOMER [--json]`: the member view (level, points and their lots,
benefits, tags) from Redis, as of now."""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from agents.membership.view import member_view
from agents.profile.reads import read_member
from ecrm.commands.tags import send_request
from schemas.errors import EcrmError
from schemas.membership import load_programme
from streams.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    member = sub.add_parser("member", help="a customer's membership: level, points, tags")
    member_sub = member.add_subparsers(dest="member_command", required=True)
    show = member_sub.add_parser("show", help="the member view, as of now")
    show.add_argument("customer_id")
    show.add_argument("--json", action="store_true", help="print JSON")
    pin = member_sub.add_parser("pin", help="set a level by hand; it never moves by itself")
    pin.add_argument("customer_id")
    pin.add_argument("level", help="a level id of the programme file")
    unpin = member_sub.add_parser("unpin", help="let the metric decide the level again")
    unpin.add_argument("customer_id")


def _programme_file(settings: Settings) -> Path:
    if settings.membership_file is None:
        raise EcrmError("no membership programme: ECRM_MEMBERSHIP_FILE is empty")
    return settings.membership_file


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.member_command == "show":
        return show_member(settings, args.customer_id, args.json)
    level = args.level if args.member_command == "pin" else None
    if level is not None and level not in load_programme(_programme_file(settings)).levels.ids:
        raise EcrmError(f"no level {level!r} in {settings.membership_file}")
    request = {
        "event_id": f"level-{uuid.uuid4()}",
        "customer_id": args.customer_id,
        "ts": datetime.now(UTC).isoformat(),
        "kind": "level",
        "points": 0,
        "level": level,
    }
    send_request(settings, "points", request)
    print(f"sent: {args.member_command} {args.customer_id}" + (f" at {level}" if level else ""))
    return 0


def show_member(settings: Settings, customer_id: str, as_json: bool) -> int:
    profile, member = read_member(settings, customer_id)
    if profile is None and member is None:
        print(f"no customer {customer_id!r}")
        return 1
    programme = load_programme(_programme_file(settings))
    view = member_view(member, profile, programme, datetime.now(UTC))
    if as_json:
        print(json.dumps(view, ensure_ascii=False, indent=2))
        return 0
    points, progress = view["points"], view["progress"]
    level = f"{view['level'] or '-'} ({view['level_name'] or 'not a member yet'})"
    print(f"customer   {view['customer_id']}")
    print(f"level      {level}" + (" pinned" if view["pinned"] else ""))
    if view["term_end"]:
        print(
            f"term ends  {view['term_end']}"
            + (f", grace until {view['grace_until']}" if view["grace_until"] else "")
        )
    print(
        f"progress   {progress['metric']} {progress['value']}"
        + (
            f"; {progress['to_next_level']} to {progress['next_level']}"
            if progress["next_level"]
            else ""
        )
        + (f"; {progress['to_keep']} to keep it" if progress["to_keep"] else "")
    )
    print(f"points     {points['balance']} (pending {points['pending']})")
    for item in points["expiring"]:
        print(f"  lapse    {item['points']} at {item['at']}")
    print(f"benefits   {', '.join(f'{k}={v}' for k, v in view['benefits'].items()) or '-'}")
    print(f"tags       {', '.join(view['tags']) or '-'}")
    return 0
