"""server start|stop|status: the EMBEDDED server of a data directory."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ValidationError
from ..server import SharedServer
from ..storage import default_data_dir, resolve_storage, storage_from_url
from .common import default_url, json_option, print_json


def register(sub: Any) -> None:
    """Add the server group."""
    group = sub.add_parser("server", help="start, stop or inspect the EMBEDDED server")
    actions = group.add_subparsers(dest="action", required=True)
    for action, help_text in (
        ("start", "start it and keep it up until `server stop`"),
        ("stop", "shut it down with a save (attached processes lose their connection)"),
        ("status", "whether it runs, its pid, socket and attached processes"),
    ):
        p = actions.add_parser(action, parents=[json_option()], help=help_text)
        p.add_argument("--data-dir", help="data directory (default: from --url, else the default)")
        p.add_argument("--db-path", help="an origin-style data file; its directory holds the rest")
        p.add_argument("--url", default=default_url(), help="an embedded:// URL")
        p.set_defaults(handler=run)


def _server(args: argparse.Namespace) -> SharedServer:
    if args.db_path:
        return SharedServer.for_db_path(args.db_path)
    if args.data_dir:
        return SharedServer(args.data_dir)
    kind, config = storage_from_url(args.url)
    if kind != "EMBEDDED":
        raise ValidationError(f"--url {args.url!r} is not an embedded:// URL; give --data-dir")
    storage = resolve_storage(kind, config)
    return storage.server or SharedServer(default_data_dir())


async def run(args: argparse.Namespace) -> int:
    """start, stop or status; status exits 1 when no server runs."""
    server = _server(args)
    if args.action == "start":
        server.start(pin=True)
    elif args.action == "stop" and not server.stop():
        print(f"no server running for {server.data_dir}")
        return 1
    status = server.status()
    if args.json:
        print_json(status)
    else:
        for name, value in status.items():
            print(f"{name:<12} {value}")
    return 0 if status["running"] or args.action == "stop" else 1
