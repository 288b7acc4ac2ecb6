"""Persistence subcommands: backup, restore, verify, export, import, migrate, snapshot."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from ..cli import OPERATOR_ERRORS, report_error
from ..commands.common import default_url, print_json
from ..store import SessionStore
from .formats import FORMATS
from .manager import Persistence
from .restore import STRATEGIES, ask_on_terminal

COMMANDS = ("backup", "restore", "verify", "export", "import", "migrate", "snapshot")


def add_commands(sub: Any) -> None:
    """Add the persistence subcommands to the CLI's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=default_url(), help="Redis URL (default $SESSIONCACHE_URL, else embedded://)"
    )
    common.add_argument("--namespace", default="sc", help="session namespace (default sc)")
    common.add_argument(
        "--dir",
        default=os.environ.get("SESSIONCACHE_BACKUP_DIR"),
        help="backup directory (default $SESSIONCACHE_BACKUP_DIR)",
    )
    common.add_argument(
        "--key-file",
        help="file holding the HMAC key (default: $SESSIONCACHE_BACKUP_KEY); never on the "
        "command line, where other users could read it",
    )
    common.add_argument("--allow-pickle", action="store_true", help="load signed pickle backups")
    common.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("backup", parents=[common], help="write a full or incremental backup")
    p.add_argument("--incremental", action="store_true")
    p.add_argument(
        "--events", action="store_true", help="also back up each session's event stream"
    )
    p.add_argument("--format", choices=FORMATS)
    p.add_argument("--description", default="")
    p.add_argument("--list", action="store_true", help="list the backups instead")

    p = sub.add_parser("restore", parents=[common], help="verify, then restore a backup")
    p.add_argument("backup", help="backup id or path")
    p.add_argument("--strategy", choices=STRATEGIES, default="merge")

    p = sub.add_parser("verify", parents=[common], help="check a backup without restoring")
    p.add_argument("backup", help="backup id or path")

    p = sub.add_parser("export", parents=[common], help="export one session to a file")
    p.add_argument("session_id")
    p.add_argument("-o", "--output", required=True, help="file to write")
    p.add_argument("--format", choices=FORMATS, default="json")

    p = sub.add_parser("import", parents=[common], help="import a session exported before")
    p.add_argument("path")
    p.add_argument("--strategy", choices=STRATEGIES, default="replace")

    p = sub.add_parser("migrate", parents=[common], help="rewrite a backup in another format")
    p.add_argument("backup", help="backup id or path")
    p.add_argument("--to", required=True, choices=FORMATS, dest="to_format")

    p = sub.add_parser("snapshot", parents=[common], help="write a point-in-time snapshot")
    p.add_argument("--format", choices=FORMATS)


def _key(args: argparse.Namespace) -> str | bytes | None:
    if args.key_file:
        return Path(args.key_file).read_bytes().strip()
    return os.environ.get("SESSIONCACHE_BACKUP_KEY") or None


async def run_command(args: argparse.Namespace) -> int:
    """Run one persistence subcommand; 0 on success, 1 when a check or restore failed."""
    try:
        store = await SessionStore.connect(args.url, namespace=args.namespace)
    except OPERATOR_ERRORS as exc:
        return report_error(args.command, exc, args.url)
    try:
        p = Persistence(store, backup_dir=args.dir, key=_key(args))
        return await _dispatch(p, args)
    except OPERATOR_ERRORS as exc:
        return report_error(args.command, exc, args.url)
    finally:
        await store.close()


async def _dispatch(p: Persistence, args: argparse.Namespace) -> int:
    allow = args.allow_pickle
    if args.command == "backup" and args.list:
        if args.json:
            print_json([dataclasses.asdict(b) for b in p.list_backups()])
            return 0
        for b in p.list_backups():
            state = f"DAMAGED: {b.error}" if b.error else f"{b.sessions} sessions"
            if b.events:
                state += f", {b.events} event streams"
            print(f"{b.backup_id}  {b.kind:<11} {b.format:<10} {state}  {b.description}")
        return 0
    if args.command == "backup":
        backup_id = await p.create_backup(
            args.description,
            args.format,
            args.incremental,
            progress=True,
            events=True if args.events else None,
        )
        print_json({"backup_id": backup_id}) if args.json else print(backup_id)
        return 0
    if args.command == "verify":
        report = await p.verify_backup(args.backup, allow_pickle=allow)
        if args.json:
            print_json(dataclasses.asdict(report))
            return 0 if report.ok else 1
        if report.ok:
            print(
                f"ok: {report.sessions} sessions, {report.tombstones} tombstones, "
                f"{report.events} event streams, chain {' <- '.join(report.chain)}, "
                f"signature {'verified' if report.signature_checked else 'not checked'}"
            )
            return 0
        print(f"DAMAGED: {report.error}")
        return 1
    if args.command == "restore":
        r = await p.restore_backup(
            args.backup, args.strategy, decide=ask_on_terminal, allow_pickle=allow, progress=True
        )
        if args.json:
            print_json(dataclasses.asdict(r))
            return 0
        print(
            f"restored {r.written}, kept {r.kept}, expired {r.expired}, "
            f"tombstones {r.tombstones}, event streams {r.events} "
            f"(skipped {r.events_skipped}), wiped {r.wiped} keys in {r.seconds:.2f} s"
        )
        return 0
    if args.command == "export":
        path = await p.export_session(args.session_id, args.output, format=args.format)
        print(path)
        return 0
    if args.command == "import":
        sid = await p.import_session(
            Path(args.path), args.strategy, decide=ask_on_terminal, allow_pickle=allow
        )
        print(sid)
        return 0
    if args.command == "migrate":
        info = p.migrate_backup(args.backup, args.to_format, allow_pickle=allow)
        print(f"{info.backup_id} -> {info.path}")
        return 0
    print(await p.snapshot(args.format, progress=True))
    return 0
