"""The sessioncache command line: demo, and script management for a fleet."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from .backends import RedisSettings, connect
from .scripts import ScriptRegistry


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
    from .tracker import StateTracker

    store = await SessionStore.connect(url, namespace=namespace)
    try:
        report = await StateTracker(store).get_statistics(active_window=window)
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
    from .expiry import cli as expiry_cli

    expiry_cli.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    from .expiry import cli as expiry_cli

    if args.command in expiry_cli.COMMANDS:
        return asyncio.run(expiry_cli.run_command(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
