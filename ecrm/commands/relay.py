"""`ecrm relay rejects`: what the Kafka relay could never send (too large, malformed), with
the reason, and the relay's counters — every partition's outbox together — so an operator
sees a rejected action without Redis tooling (docs/operations.md, "The Kafka relay")."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from streams.counters import kafka_outboxes
from streams.relay_rejects import list_rejects, relay_stats
from streams.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    relay = sub.add_parser("relay", help="the Kafka relay: messages it could not send")
    relay_sub = relay.add_subparsers(dest="relay_command", required=True)
    rejects = relay_sub.add_parser("rejects", help="the latest rejected messages, newest first")
    rejects.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    rejects.add_argument("--json", action="store_true", help="print JSON lines")


def run(args: argparse.Namespace, settings: Settings, out: TextIO = sys.stdout) -> int:
    client = settings.redis()
    outboxes = kafka_outboxes(settings.partitions)
    try:
        stats = relay_stats(client, outboxes)
        rejects = list_rejects(client, outboxes, count=max(args.limit, 0))
    finally:
        client.close()
    if args.json:
        for r in rejects:
            line = {
                "id": r.id,
                "outbox": r.outbox,
                "outbox_id": r.outbox_id,
                "topic": r.topic,
                "key": r.key.decode(errors="replace") if r.key is not None else None,
                "size": r.size,
                "reason": r.reason,
                "rejected_at": r.rejected_at.isoformat(),
                "relay": r.relay,
            }
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
        return 0
    counters = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.items())) or "nothing yet"
    out.write(f"relay: {counters}\n")
    if not rejects:
        out.write("no rejected messages\n")
    for r in rejects:
        key = r.key.decode(errors="replace") if r.key is not None else "-"
        out.write(
            f"{r.rejected_at:%Y-%m-%d %H:%M:%S} {r.topic} key={key} {r.size:,} B: {r.reason}\n"
        )
    return 0
