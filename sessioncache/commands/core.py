"""Commands that read the whole system: health, stats, events, scripts."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from ..backends import RedisSettings, connect
from ..component_checks import register_recorded_jobs
from ..errors import BackendUnavailable
from ..scripts import ScriptRegistry
from ..storage import resolve_storage, storage_from_url
from .common import connection_options, json_option, open_system, print_json, print_table


def register(sub: Any) -> None:
    """Add health, stats, events and scripts."""
    common, as_json = connection_options(), json_option()
    p = sub.add_parser(
        "health",
        parents=[common, as_json],
        help="component health and the fleet's jobs (exit 1 if down, 2 if degraded)",
    )
    p.set_defaults(handler=health)

    p = sub.add_parser("stats", parents=[common, as_json], help="session statistics")
    p.add_argument("--window", type=float, default=3600.0, help="active-user window, s")
    p.set_defaults(handler=stats)

    p = sub.add_parser("events", parents=[common, as_json], help="the event stream of a session")
    p.add_argument("session_id")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--type", action="append", dest="types", help="only these event types")
    p.set_defaults(handler=events)

    p = sub.add_parser(
        "scripts", parents=[common, as_json], help="load, list or check the Lua scripts"
    )
    p.add_argument("action", choices=["load", "list", "check"])
    p.set_defaults(handler=scripts)


async def health(args: argparse.Namespace) -> int:
    """Print each component's health, the fleet's jobs included (lease holder, last run).

    Exit status: 0 ok; 1 down (a critical component failed, or Redis unreachable); 2 degraded
    (sessions are served, but a non-critical component failed: say the last backup run)."""
    try:
        async with open_system(args) as system:
            await register_recorded_jobs(system)
            report = await system.health_check(restart=False)
    except BackendUnavailable as exc:
        report = {"healthy": False, "status": "down", "error": str(exc), "components": {}}
    if args.json:
        print_json(report)
    else:
        print(
            f"status: {report['status']}" + (f"  ({report['error']})" if "error" in report else "")
        )
        rows = []
        for name, result in report["components"].items():
            details = ", ".join(
                f"{k}={v}"
                for k, v in _for_people(result).items()
                if k not in ("ok", "restarts") and v not in (None, [])
            )
            rows.append((name, "ok" if result.get("ok") else "FAILED", details))
        if rows:
            print_table(("component", "state", "details"), rows)
    return {"ok": 0, "degraded": 2}.get(report["status"], 1)


def _for_people(result: dict[str, Any]) -> dict[str, Any]:
    """A component's entry with its times as UTC timestamps instead of epoch milliseconds."""
    shown = dict(result)
    ms = shown.pop("last_run_at_ms", None)
    if ms is not None:
        at = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        shown = {"last_run": at.isoformat(timespec="seconds"), **shown}
    return shown


async def stats(args: argparse.Namespace) -> int:
    """Print session statistics."""
    async with open_system(args) as system:
        report = await system.get_statistics(active_window=args.window)
    print_json(report.to_dict()) if args.json else print(report.to_table())
    return 0


async def events(args: argparse.Namespace) -> int:
    """Print a session's events, oldest first."""
    async with open_system(args) as system:
        found = await system.get_events(args.session_id, types=args.types, limit=args.limit)
    if args.json:
        print_json([e.to_dict() for e in found])
    else:
        print_table(
            ("at", "type", "state", "fields"),
            [
                (e.at.isoformat(timespec="milliseconds"), e.type, e.state or "", e.fields)
                for e in found
            ],
        )
    return 0


async def scripts(args: argparse.Namespace) -> int:
    """list: the scripts and their SHAs; load: SCRIPT LOAD them; check: 1 if any is missing."""
    registry = ScriptRegistry()
    if args.action == "list":
        if args.json:
            print_json({s.name: s.sha for s in registry.scripts.values()})
            return 0
        for script in registry.scripts.values():
            summary = script.source.splitlines()[0].split(": ", 1)[-1]
            print(f"{script.sha}  {script.name:<14} {summary}")
        return 0
    storage = resolve_storage(*storage_from_url(args.url))
    if storage.server is not None:
        storage.server.attach()
    client = connect(RedisSettings.from_options(storage.url, **storage.connection))
    try:
        if args.action == "load":
            for name, sha in (await registry.load(client)).items():
                print(f"loaded  {name:<14} {sha}")
            return 0
        missing = await registry.missing(client)
        if args.json:
            print_json({name: name not in missing for name in registry.scripts})
        else:
            for name in registry.scripts:
                print(f"{'MISSING' if name in missing else 'ok':<8}{name}")
        return 1 if missing else 0
    finally:
        await client.aclose()
        if storage.server is not None:
            storage.server.detach()
