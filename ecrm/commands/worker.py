"""`ecrm worker`: the stream processor (agents/worker.py) against the configured services."""

from __future__ import annotations

import argparse

from streams.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    worker = sub.add_parser("worker", help="run the stream processor")
    worker.add_argument("--loglevel", default="warning")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from agents.worker import run_worker

    return run_worker(settings, loglevel=args.loglevel)
