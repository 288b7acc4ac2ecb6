"""The sessioncache command line: argument parsing and dispatch to sessioncache.commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from redis.exceptions import RedisClusterException, RedisError

from .commands import GROUPS
from .errors import SessionCacheError
from .redaction import redact_message

# What a command reports as one line on stderr (exit 1) rather than a traceback: a server
# that is down or refuses us, a bad URL or option, a file that cannot be read or written.
OPERATOR_ERRORS = (SessionCacheError, RedisError, RedisClusterException, OSError, ValueError)


def report_error(command: str, exc: BaseException, url: str | None = None) -> int:
    """Print one line for the operator on stderr, without secrets; the exit status (1)."""
    message = " ".join(redact_message(exc, url=url).split()) or type(exc).__name__
    print(f"sessioncache {command}: error: {message}", file=sys.stderr)
    return 1


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
    from .expiry import cli as expiry_cli

    expiry_cli.add_commands(sub)
    for name in expiry_cli.COMMANDS:
        sub.choices[name].set_defaults(handler=expiry_cli.run_command)
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
    except OPERATOR_ERRORS as exc:
        return report_error(args.command, exc, getattr(args, "url", None))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
