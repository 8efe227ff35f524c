"""`ecrm api`: the HTTP ingestion, profile API, metrics and dashboard server (docs/api.md);
`ecrm api key add NAME --kind write|read` makes a key and keeps only its hash."""

from __future__ import annotations

import argparse
import sys

from ecrm.api.keys import add_key, load_keys
from streams.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    api = sub.add_parser("api", help="HTTP ingestion (Segment-compatible), profiles, dashboard")
    api.add_argument("--host", help="address to listen on (default ECRM_API_HOST, 127.0.0.1)")
    api.add_argument("--port", type=int, help="port (default ECRM_API_PORT, 8080)")
    keys = api.add_subparsers(dest="api_command")
    key = keys.add_parser("key", help="the API's keys").add_subparsers(
        dest="key_command", required=True
    )
    new = key.add_parser("add", help="make a key (printed once; only its hash is kept)")
    new.add_argument("name", help="the source or reader it is for, e.g. web-shop")
    new.add_argument("--kind", choices=("write", "read"), required=True)
    new.add_argument("--rate", type=float, help="events a second (default ECRM_API_RATE_PER_S)")
    new.add_argument(
        "--origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin whose pages may send with this write key (analytics.js), e.g. "
        "https://shop.example; repeat for more; * for any",
    )
    key.add_parser("list", help="the keys' names and kinds")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.api_command == "key":
        path = settings.keys_file
        if args.key_command == "add":
            key = add_key(path, args.name, args.kind, args.rate, tuple(args.origin))
            print(key)
            print(
                f"{args.kind} key {args.name!r} added to {path}; it is shown only now",
                file=sys.stderr,
            )
            return 0
        for k in load_keys(path):
            origins = " ".join(k.origins) or "-"
            print(f"{k.name}\t{k.kind}\t{k.rate_per_s or settings.api_rate_per_s:g}/s\t{origins}")
        return 0
    return serve(settings, host=args.host, port=args.port)


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> int:
    import uvicorn

    from ecrm.api.app import create_app

    # serves at once: the topics are made in the background, and every send answers 503
    # until the broker is there (ecrm/api/app.py)
    app = create_app(settings)
    keys = len(app.state.ctx.keys)
    if not keys:
        print(
            f"ecrm api: no keys in {settings.keys_file}: every request will get 401; "
            "add one with `ecrm api key add NAME --kind write`",
            file=sys.stderr,
        )
    uvicorn.run(app, host=host or settings.api_host, port=port or settings.api_port)
    return 0
