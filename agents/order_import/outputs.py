"""Where an import's rows go: events to the orders topic, rejects to a file, counts to a
summary. Nothing here sees a personal value in clear: rows arrive hashed or masked."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

import orjson

from agents.order_import.rows import Imported, Rejected, RowOutcome, Skipped
from streams.bulk_producer import BulkProducer
from streams.kafka_auth import KafkaAuth
from streams.settings import Settings
from streams.topics import ensure_topics

#: how long the last events may take to be acknowledged before the import says so
FLUSH_TIMEOUT_S = 120.0


class OrderSender:
    """Produces events to the orders topic keyed by customer, counting what failed.

    Delivery is checked, not assumed: a failed send is counted and the import exits 1;
    running it again is safe, as delivered events count once downstream.
    """

    def __init__(self, settings: Settings, *, dry_run: bool = False) -> None:
        self.topic = settings.topic("orders")
        self.dry_run = dry_run
        self.sent = 0
        self.paid = 0
        self.refunds = 0
        self.failed = 0
        self.first_error: str | None = None
        self._producer: BulkProducer | None = None
        if not dry_run:
            auth = KafkaAuth.of(settings)
            ensure_topics(settings.kafka_bootstrap, [self.topic], settings.partitions, auth=auth)
            self._producer = BulkProducer(settings.kafka_bootstrap, self.topic, auth=auth)

    def send(self, event: dict[str, Any]) -> None:
        self.sent += 1
        if event["status"] == "paid":
            self.paid += 1
        else:
            self.refunds += 1
        if self._producer is not None:
            self._producer.send(str(event["customer_id"]).encode(), orjson.dumps(event))

    def close(self) -> None:
        if self._producer is not None:
            delivery = self._producer.close(timeout=FLUSH_TIMEOUT_S)
            self.failed, self.first_error = delivery.failed, delivery.first_error
            self._producer = None

    def __enter__(self) -> OrderSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RejectFile:
    """JSON Lines of rejected rows: `{"line", "reason", "raw"}`, raw with personal data
    masked. Replaces an earlier file at the same path; removed again when nothing was
    rejected, so a reject file always describes the latest import."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self.first: str | None = None
        self._file: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, line: int, reason: str, raw: str) -> None:
        self.count += 1
        if self.first is None:
            self.first = f"line {line}: {reason}"
        self._file.write(orjson.dumps({"line": line, "reason": reason, "raw": raw}) + b"\n")

    def close(self) -> None:
        self._file.close()
        if self.count == 0:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RejectFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ImportReport:
    """What became of a file's rows, and of the events they gave."""

    source: str
    topic: str
    dry_run: bool = False
    rejects_path: Path | None = None
    rows: int = 0
    imported: int = 0
    rejected: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    events: int = 0
    paid: int = 0
    refunds: int = 0
    undelivered: int = 0
    delivery_error: str | None = None
    first_reject: str | None = None
    elapsed: float = 0.0

    def count(self, outcome: RowOutcome) -> None:
        self.rows += 1
        if isinstance(outcome, Imported):
            self.imported += 1
        elif isinstance(outcome, Skipped):
            self.skipped[outcome.reason] += 1
        elif isinstance(outcome, Rejected):
            self.rejected += 1

    def finish(self, elapsed: float, sender: OrderSender, rejects: RejectFile) -> None:
        self.elapsed = elapsed
        self.events, self.paid, self.refunds = sender.sent, sender.paid, sender.refunds
        self.undelivered, self.delivery_error = sender.failed, sender.first_error
        self.first_reject = rejects.first

    @property
    def rate(self) -> float:
        """Rows per second, reading and producing (until the last event was acknowledged)."""
        return self.rows / max(self.elapsed, 1e-6)

    def print(self, out: TextIO) -> None:
        say = functools.partial(print, file=out)
        say(
            f"ecrm import: {self.source}: {self.rows:,} rows in {self.elapsed:.1f}s "
            f"= {self.rate:,.0f} rows/s"
        )
        where = "(dry run: none sent)" if self.dry_run else f"on {self.topic}"
        say(
            f"  imported {self.imported:>10,}  orders -> {self.events:,} events {where} "
            f"({self.paid:,} paid, {self.refunds:,} refunds)"
        )
        why = ", ".join(f"{reason} {n:,}" for reason, n in self.skipped.most_common())
        say(f"  skipped  {sum(self.skipped.values()):>10,}  {why}".rstrip())
        where = f"-> {self.rejects_path}  (first: {self.first_reject})" if self.rejected else ""
        say(f"  rejected {self.rejected:>10,}  {where}".rstrip())
        if self.undelivered:
            say(
                f"  NOT DELIVERED {self.undelivered:,} events ({self.delivery_error}); import "
                "the file again: events already delivered count once"
            )
