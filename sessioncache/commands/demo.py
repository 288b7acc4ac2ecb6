"""demo: worker processes serving simulated users, then a report (sessioncache.demo)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import ValidationError
from ..storage import URL_ENV
from .common import json_option


def register(sub: Any) -> None:
    """Add the demo command."""
    p = sub.add_parser(
        "demo",
        parents=[json_option()],
        help="several worker processes serve simulated users; prints a report",
    )
    p.add_argument(
        "--url",
        default=os.environ.get(URL_ENV),
        help=f"run on this server (default ${URL_ENV}, else an EMBEDDED server in a "
        "temporary directory)",
    )
    p.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    p.add_argument("--users", type=int, default=200, help="simulated users (default 200)")
    p.add_argument("--messages", type=int, default=5, help="messages per user (default 5)")
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every count checks out."""
    from ..demo import run_demo

    for name in ("workers", "users", "messages"):
        if getattr(args, name) < 1:
            raise ValidationError(f"--{name} must be at least 1")
    report = await run_demo(
        args.url,
        workers=args.workers,
        users=args.users,
        messages=args.messages,
        progress=sys.stderr,
    )
    report.print(as_json=args.json)
    return 0 if report.ok else 1
