"""Expiry subcommands: ``sessioncache expire`` (a sweep now) and ``sessioncache archive``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ValidationError

COMMANDS = ("expire", "archive")


def add_commands(sub: Any) -> None:
    """Add the expiry subcommands to the CLI's subparsers."""
    from ..commands.common import connection_options, json_option

    common = argparse.ArgumentParser(add_help=False, parents=[connection_options(), json_option()])

    p = sub.add_parser("expire", parents=[common], help="run an expiry sweep now")
    p.add_argument("--rules", required=True, help="TOML file of [[rule]] tables")
    p.add_argument("--dry-run", action="store_true", help="report what would happen only")
    p.add_argument("--archive-dir", help="where archived sessions are also written")

    p = sub.add_parser("archive", parents=[common], help="list or restore archived sessions")
    p.add_argument("action", choices=["list", "restore"])
    p.add_argument("session_id", nargs="?", help="restore: the session id")
    p.add_argument("--user", help="list: one user's archived sessions")
    p.add_argument("--archive-id", help="restore: a given archive (default: the newest)")
    p.add_argument("--replace", action="store_true", help="restore over a live session")
    p.add_argument("--archive-dir", help="also look for archived sessions in this directory")


async def run_command(args: argparse.Namespace) -> int:
    """Run one expiry subcommand (errors reach the CLI's one-line report on stderr)."""
    from ..persistence.restore import Progress
    from ..storage import storage_from_url
    from ..system import SessionSystem

    options: dict[str, Any] = {"namespace": args.namespace, "expiry_interval": 86400.0}
    if getattr(args, "rules", None):
        options["expiry_rules"] = args.rules
    if args.archive_dir:
        options["archive_dir"] = args.archive_dir
    system = await SessionSystem.open(*storage_from_url(args.url), health_interval=None, **options)
    try:
        if args.command == "expire":
            bar = Progress("expire")
            seen = [0]

            def progress(examined: int) -> None:
                bar.update(examined - seen[0])
                seen[0] = examined

            try:
                report = await system.expiry.sweep(dry_run=args.dry_run, progress=progress)
            finally:
                bar.close()
            if args.json:
                print(json.dumps(report.to_dict()))
            else:
                verb = "would apply" if report.dry_run else "applied"
                acts = ", ".join(f"{k} {v}" for k, v in sorted(report.actions.items())) or "none"
                print(f"examined {report.examined}; {verb}: {acts}; {report.duration_s:.3f}s")
            return 0
        if args.action == "list":
            archived = await system.list_archived(args.user)
            if args.json:
                print(json.dumps([a.to_dict() for a in archived]))
            for a in archived if not args.json else []:
                where = "redis" if a.in_redis else "file"
                print(f"{a.archived_at.isoformat(timespec='seconds')}  {where:<5}  {a.archive_id}")
            return 0
        if not args.session_id:
            raise ValidationError("archive restore needs a session id")
        session = await system.restore_archived(
            args.session_id, archive_id=args.archive_id, replace=args.replace
        )
        print(json.dumps({"restored": session.session_id, "version": session.version}))
        return 0
    finally:
        await system.shutdown()
