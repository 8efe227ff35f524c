"""`ecrm import orders FILE`: a shop's order history onto the orders topic, row by row.

The file is streamed (bounded memory); each row becomes order events through the pure
readers in agents/ and is produced to `ecrm.orders` like any storefront's event, so the
same worker builds the same profiles. Bad rows go to a reject file, never stop the import.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple, TextIO

from agents.order_import.jsonl import jsonl_outcome, masked_jsonl
from agents.order_import.outputs import ImportReport, OrderSender, RejectFile
from agents.order_import.rows import Imported, ImportPolicy, Rejected, RowOutcome, RowReader
from agents.order_import.values import clean
from ecrm.progress import Progress
from schemas.order_mapping import OrderFileError, OrderMapping, load_mapping
from schemas.taobao import SIGNATURE, TAOBAO
from streams.order_files import OrderFile
from streams.settings import Settings

FORMATS = ("auto", "taobao", "csv", "jsonl")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


class Row(NamedTuple):
    """A row's outcome, with what a reject file may show of it (only for rejects)."""

    line: int
    outcome: RowOutcome
    shown: str = ""


def run_import(
    settings: Settings,
    path: Path,
    *,
    fmt: str = "auto",
    mapping_path: Path | None = None,
    rejects_path: Path | None = None,
    shop_id: str | None = None,
    all_history: bool = False,
    dry_run: bool = False,
    progress: bool | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """`ecrm import orders`: import, print the summary; 0 when every event was delivered."""
    report = import_orders(
        settings,
        path,
        fmt=fmt,
        mapping_path=mapping_path,
        rejects_path=rejects_path,
        shop_id=shop_id,
        all_history=all_history,
        dry_run=dry_run,
        progress=progress,
    )
    report.print(out)
    return 0 if report.undelivered == 0 else 1


def import_orders(
    settings: Settings,
    path: Path,
    *,
    fmt: str = "auto",
    mapping_path: Path | None = None,
    rejects_path: Path | None = None,
    shop_id: str | None = None,
    all_history: bool = False,
    dry_run: bool = False,
    progress: bool | None = False,
) -> ImportReport:
    """Stream one file onto the orders topic; what happened to its rows."""
    now = datetime.now(UTC)
    kind, mapping = _format_of(path, fmt, mapping_path)
    # buyer names in a CSV need the secret; in JSON Lines only the lines that carry `buyer`
    # (without it those lines are rejected, each with the reason)
    hashes_buyers = mapping is not None and mapping.columns.buyer is not None
    policy = ImportPolicy(
        now=now,
        secret=settings.pii_key() if hashes_buyers else _optional_key(settings),
        not_before=None if all_history else now - timedelta(days=settings.rfm_window_days),
        shop_id=shop_id,
    )
    rejects_path = rejects_path or path.with_name(path.name + ".rejects.jsonl")
    with OrderFile(path, mapping.encoding if mapping is not None else "auto") as file:
        rows = _jsonl_rows(file, policy) if kind == "jsonl" else _csv_rows(file, mapping, policy)
        first = next(rows, None)  # reads the header: a wrong file fails before Kafka is asked
        report = ImportReport(
            source=f"{path.name} ({'taobao export' if kind == 'taobao' else kind}, "
            f"{file.encoding})",
            topic=settings.topic("orders"),
            dry_run=dry_run,
            rejects_path=rejects_path,
        )
        started = time.monotonic()
        bar = Progress(file.size, file.position, enabled=progress)
        with OrderSender(settings, dry_run=dry_run) as sender, RejectFile(rejects_path) as rejects:
            for row in _chain(first, rows):
                report.count(row.outcome)
                if isinstance(row.outcome, Imported):
                    for event in row.outcome.events:
                        sender.send(event)
                elif isinstance(row.outcome, Rejected):
                    rejects.write(row.line, row.outcome.reason, row.shown)
                bar.tick(report.rows)
        bar.done(report.rows)
        report.finish(time.monotonic() - started, sender, rejects)
    return report


def _optional_key(settings: Settings) -> bytes | None:
    return settings.pii_key() if settings.pii_secret is not None else None


def _format_of(path: Path, fmt: str, mapping_path: Path | None) -> tuple[str, OrderMapping | None]:
    """The file's kind and mapping: as told, or recognised by suffix and header."""
    if fmt not in FORMATS:
        raise OrderFileError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    if mapping_path is not None and fmt not in ("auto", "csv"):
        raise OrderFileError("--mapping describes a generic CSV: use it with --format csv")
    if fmt == "csv" or mapping_path is not None:
        if mapping_path is None:
            raise OrderFileError("--format csv needs --mapping MAPPING.yaml (docs/import.md)")
        return "csv", load_mapping(mapping_path)
    if fmt == "taobao":
        return "taobao", TAOBAO
    if fmt == "jsonl" or path.suffix.lower() in JSONL_SUFFIXES:
        return "jsonl", None
    with OrderFile(path) as file:
        header = next((r.fields for r in file.records() if any(f.strip() for f in r.fields)), [])
    names = {clean(name) for name in header}
    if set(SIGNATURE) <= names:
        return "taobao", TAOBAO
    raise OrderFileError(
        f"{path.name} is not a Taobao/Tmall order export (its header lacks "
        f"{', '.join(n for n in SIGNATURE if n not in names)}): for another CSV give "
        "--mapping MAPPING.yaml, for JSON Lines --format jsonl"
    )


def _csv_rows(file: OrderFile, mapping: OrderMapping | None, policy: ImportPolicy) -> Iterator[Row]:
    assert mapping is not None
    records = file.records(mapping.delimiter)
    header = next(
        (r for r in records if r.error is None and any(f.strip() for f in r.fields)), None
    )
    if header is None:
        raise OrderFileError(f"{file.path.name} has no header line")
    reader = RowReader(mapping, header.fields, policy)
    for record in records:
        if record.error is not None:
            yield Row(record.line, Rejected(record.error))
            continue
        outcome = reader.read(record.fields)
        shown = _csv_line(reader.masked(record.fields)) if isinstance(outcome, Rejected) else ""
        yield Row(record.line, outcome, shown)


def _jsonl_rows(file: OrderFile, policy: ImportPolicy) -> Iterator[Row]:
    for number, line in file.lines():
        outcome = jsonl_outcome(line, policy)
        shown = masked_jsonl(line) if isinstance(outcome, Rejected) else ""
        yield Row(number, outcome, shown)


def _chain(first: Row | None, rest: Iterator[Row]) -> Iterator[Row]:
    if first is not None:
        yield first
        yield from rest


def _csv_line(fields: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def add_parser(sub: argparse._SubParsersAction) -> None:
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


def run(args: argparse.Namespace, settings: Settings) -> int:
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
