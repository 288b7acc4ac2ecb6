"""The sessioncache command line: argument parsing and dispatch to sessioncache.commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from .commands import GROUPS
from .errors import SessionCacheError


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (groups in sessioncache.commands, plus persistence)."""
    parser = argparse.ArgumentParser(
        prog="sessioncache",
        description="Sessions shared by fleets of bot workers. Start with: sessioncache demo",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)

    from .persistence.cli import COMMANDS, add_commands

    add_commands(sub)
    for name in COMMANDS:
        sub.choices[name].set_defaults(handler=_persistence)
    return parser


async def _persistence(args: argparse.Namespace) -> int:
    from .persistence.cli import run_command
    from .storage import resolve_storage, storage_from_url

    storage = resolve_storage(*storage_from_url(args.url))
    if storage.server is None:
        return await run_command(args)
    await asyncio.to_thread(storage.server.attach)
    args.url = storage.url
    try:
        return await run_command(args)
    finally:
        await asyncio.to_thread(storage.server.detach)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors print as one line with exit status 1, never a traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(asyncio.run(args.handler(args)))
    except (SessionCacheError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"error: {first}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
