"""The sessioncache command line: demo, and script management for a fleet."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from redis.exceptions import RedisClusterException, RedisError

from .backends import RedisSettings, connect
from .errors import SessionCacheError
from .redaction import redact_message
from .scripts import ScriptRegistry

# What a command reports as one line on stderr (exit 1) rather than a traceback: a server
# that is down or refuses us, a bad URL or option, a file that cannot be read or written.
OPERATOR_ERRORS = (SessionCacheError, RedisError, RedisClusterException, OSError, ValueError)


def report_error(command: str, exc: BaseException, url: str | None = None) -> int:
    """Print one line for the operator on stderr, without secrets; the exit status (1)."""
    message = " ".join(redact_message(exc, url=url).split()) or type(exc).__name__
    print(f"sessioncache {command}: error: {message}", file=sys.stderr)
    return 1


async def _scripts(action: str, url: str) -> int:
    registry = ScriptRegistry()
    if action == "list":
        for script in registry.scripts.values():
            summary = script.source.splitlines()[0].split(": ", 1)[-1]
            print(f"{script.sha}  {script.name:<14} {summary}")
        return 0
    client = connect(RedisSettings(url=url))
    try:
        if action == "load":
            for name, sha in (await registry.load(client)).items():
                print(f"loaded  {name:<14} {sha}")
            return 0
        missing = await registry.missing(client)
        for name in registry.scripts:
            print(f"{'MISSING' if name in missing else 'ok':<8}{name}")
        return 1 if missing else 0
    finally:
        await client.aclose()


async def _stats(url: str, namespace: str, window: float, as_json: bool) -> int:
    import json

    from .store import SessionStore
    from .tracker import StateTracker, TrackerConfig

    config = TrackerConfig()
    store = await SessionStore.connect(url, namespace=namespace, extras=[config.store_extras()])
    try:
        report = await StateTracker(store, config).get_statistics(active_window=window)
    finally:
        await store.close()
    print(json.dumps(report.to_dict(), indent=2) if as_json else report.to_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sessioncache", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a short demo (in-process backend unless --url)")
    demo.add_argument("--url", help="run against this Redis URL instead")

    scripts = sub.add_parser("scripts", help="load, list or check the Lua scripts on a server")
    scripts.add_argument("action", choices=["load", "list", "check"])
    scripts.add_argument("--url", default="redis://127.0.0.1:6379", help="Redis URL")

    stats = sub.add_parser("stats", help="show session statistics (states, events, durations)")
    stats.add_argument("--url", default="redis://127.0.0.1:6379", help="Redis URL")
    stats.add_argument("--namespace", default="sc", help="key namespace")
    stats.add_argument("--window", type=float, default=3600.0, help="active-user window, s")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")

    from .persistence.cli import add_commands

    add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status (errors: one line on stderr, status 1)."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except OPERATOR_ERRORS as exc:
        return report_error(args.command, exc, getattr(args, "url", None))


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from .demo import run_demo

        url = args.url
        kind = (
            "MEMORY"
            if not url or url.startswith("memory://")
            else ("CLUSTER" if "+cluster" in url else "REDIS")
        )
        asyncio.run(run_demo(kind, url))
        return 0
    if args.command == "stats":
        return asyncio.run(_stats(args.url, args.namespace, args.window, args.json))
    if args.command == "scripts":
        return asyncio.run(_scripts(args.action, args.url))
    from .persistence.cli import COMMANDS, run_command

    if args.command in COMMANDS:
        return asyncio.run(run_command(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
