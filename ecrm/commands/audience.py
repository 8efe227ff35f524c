"""`ecrm audience export`: the customers a where-clause over their profiles, or a named query,
selects (圈选), written as CSV — for a look, a spreadsheet, or `ecrm campaign send --audience`. The selection itself is agents/audience.py.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from agents.audience import Audience, select_audience
from ecrm.output import cell_text, spreadsheet_safe
from schemas.audience_where import checked_where
from streams.analysis import open_for_analysis
from streams.settings import Settings


def write_csv(audience: Audience, out: TextIO) -> int:
    """The audience as CSV: a header, then one line per customer (NULL as an empty cell,
    times in UTC and tags as a JSON list, as `ecrm sql --format csv` writes them). A cell
    that a spreadsheet would take for a formula gets a leading `'` (`spreadsheet_safe`)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(audience.columns)
    for row in audience.rows:
        writer.writerow(
            [spreadsheet_safe(cell_text(row.get(c), null="")) for c in audience.columns]
        )
    return len(audience.rows)


def run_audience_export(
    settings: Settings,
    *,
    where: str | None,
    query: str | None,
    params: Sequence[str],
    out_path: Path | None,
    report: TextIO = sys.stderr,
) -> int:
    """`ecrm audience export`: the CSV to `out_path` (stdout without one), a summary line to
    `report`."""
    if where is not None:
        checked_where(where)  # a bad clause is refused before ClickHouse is opened
    ch = open_for_analysis(settings.clickhouse_url)
    try:
        audience = select_audience(ch, where=where, query=query, params=params)
    finally:
        ch.close()
    if out_path is None:
        write_csv(audience, sys.stdout)
    else:
        with out_path.open("w", encoding="utf-8", newline="") as handle:
            write_csv(audience, handle)
    where_to = "stdout" if out_path is None else str(out_path)
    report.write(f"{len(audience.rows)} customers selected ({audience.how}) -> {where_to}\n")
    return 0


def selection_args(parser: argparse.ArgumentParser, *, with_file: bool) -> None:
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    audience = sub.add_parser(
        "audience", help="select customers by their profiles (docs/campaigns.md)"
    )
    audience_sub = audience.add_subparsers(dest="audience_command", required=True)
    export_audience = audience_sub.add_parser("export", help="the selected customers as CSV")
    selection_args(export_audience, with_file=False)
    export_audience.add_argument("--out", type=Path, help="CSV file to write (default: stdout)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return run_audience_export(
        settings, where=args.where, query=args.query, params=args.param, out_path=args.out
    )
