"""`ecrm customer erase|export|consent|unsubscribe`: what a customer may ask of the shop.

    ecrm customer erase ID [--operator NAME] [--wait SECONDS]   erased everywhere, and on replay
    ecrm customer export ID [--out FILE]                        their data as JSON (access)
    ecrm customer consent ID --channel sms (--grant | --deny)   their word on a channel
    ecrm customer unsubscribe TOKEN                             a provider hands back a token

An id that is a phone number or an e-mail address is looked up as the keyed hash the worker
keeps it under (schemas/pii.py). docs/privacy.md says what each does and where.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.privacy.consent import consent_event, send_member_update
from agents.privacy.erasure import erase_customer, export_customer, wait_done
from schemas.errors import EcrmError
from schemas.events import CHANNELS
from schemas.pii import stored_customer_id
from schemas.privacy import BadToken, read_unsubscribe_token
from streams.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    customer = sub.add_parser("customer", help="erase, export, consent: a customer's rights")
    what = customer.add_subparsers(dest="customer_command", required=True)
    erase = what.add_parser("erase", help="erase a customer everywhere, and on replay")
    erase.add_argument("customer_id")
    erase.add_argument("--operator", default=None, help="who asked (audit); default: you")
    erase.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for the ClickHouse deletion (a sink must be running)",
    )
    export = what.add_parser("export", help="a customer's data as JSON (access request)")
    export.add_argument("customer_id")
    export.add_argument("--out", type=Path, help="write to this file instead of stdout")
    export.add_argument(
        "--no-clickhouse", action="store_true", help="Redis only (e.g. while chdb is in use)"
    )
    consent = what.add_parser("consent", help="record a customer's consent on a channel")
    consent.add_argument("customer_id")
    consent.add_argument("--channel", required=True, choices=CHANNELS)
    word = consent.add_mutually_exclusive_group(required=True)
    word.add_argument("--grant", action="store_true")
    word.add_argument("--deny", action="store_true")
    unsubscribe = what.add_parser(
        "unsubscribe", help="opt out with an action's params.unsubscribe_token"
    )
    unsubscribe.add_argument("token")


def run(args: argparse.Namespace, settings: Settings) -> int:
    command = args.customer_command
    if command == "unsubscribe":
        return _unsubscribe(settings, args.token)
    customer_id = stored_customer_id(args.customer_id, settings.privacy_key())
    if command == "erase":
        return _erase(settings, customer_id, args.operator, args.wait)
    if command == "export":
        return _export(settings, customer_id, args.out, not args.no_clickhouse)
    return _consent(settings, customer_id, {args.channel: bool(args.grant)}, "consent")


def _erase(settings: Settings, customer_id: str, operator: str | None, wait_s: float) -> int:
    client = settings.redis()
    try:
        who = operator or f"cli:{getpass.getuser()}"
        erasure = erase_customer(client, settings, customer_id, who, datetime.now(UTC))
        print(
            f"erased {customer_id}: {erasure.keys_removed} Redis keys removed, later and "
            f"replayed events will be dropped (erasure {erasure.erasure_id})"
        )
        if wait_s <= 0:
            print("ClickHouse rows are deleted by the sink, then audited in `erasures`")
            return 0
        done = wait_done(client, erasure, wait_s)
    finally:
        client.close()
    if done is None:
        print(f"the sink has not deleted the ClickHouse rows within {wait_s:g}s", file=sys.stderr)
        return 1
    rows = ", ".join(f"{t} {n}" for t, n in done["rows"].items())
    print(f"ClickHouse rows deleted: {rows or 'none'}")
    return 0


def _export(settings: Settings, customer_id: str, out: Path | None, with_ch: bool) -> int:
    ch = None
    if with_ch:
        from streams.analysis import open_for_analysis

        ch = open_for_analysis(settings.clickhouse_url)  # also while `ecrm up` holds chdb
    client = settings.redis()
    try:
        data = export_customer(client, settings, customer_id, ch)
    finally:
        client.close()
        if ch is not None:
            ch.close()
    text = json.dumps(data, ensure_ascii=False, indent=2, default=_json_value)
    if out is None:
        print(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        print(f"{customer_id}: written to {out}", file=sys.stderr)
    return 0


def _json_value(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _consent(settings: Settings, customer_id: str, said: dict[str, bool], source: str) -> int:
    send_member_update(settings, consent_event(customer_id, said, datetime.now(UTC), source))
    words = ", ".join(f"{c} {'granted' if g else 'denied'}" for c, g in said.items())
    print(f"{customer_id}: {words} (sent to {settings.topic('customers')})")
    return 0


def _unsubscribe(settings: Settings, token: str) -> int:
    try:
        customer_id, channels = read_unsubscribe_token(token, settings.privacy_key())
    except BadToken as exc:
        raise EcrmError(f"unsubscribe token refused: {exc}") from None
    return _consent(settings, customer_id, dict.fromkeys(channels, False), "unsubscribe")
