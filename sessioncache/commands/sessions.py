"""sessions list|show|delete."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import SessionNotFound
from ..models import Session
from .common import connection_options, json_option, open_system, print_json, print_table


def register(sub: Any) -> None:
    """Add the sessions group."""
    common, as_json = connection_options(), json_option()
    group = sub.add_parser("sessions", help="list, show or delete sessions")
    actions = group.add_subparsers(dest="action", required=True)
    p = actions.add_parser("list", parents=[common, as_json], help="sessions, newest first")
    p.add_argument("--user", help="only this user's sessions")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(handler=list_sessions)
    p = actions.add_parser("show", parents=[common, as_json], help="one session in full")
    p.add_argument("session_id")
    p.set_defaults(handler=show)
    p = actions.add_parser("delete", parents=[common], help="delete sessions")
    p.add_argument("session_ids", nargs="+")
    p.set_defaults(handler=delete)


def _row(s: Session) -> tuple[Any, ...]:
    return (
        s.session_id,
        s.state,
        s.version,
        s.message_count,
        s.updated_at.isoformat(timespec="seconds"),
    )


async def list_sessions(args: argparse.Namespace) -> int:
    """Print up to --limit sessions (of --user, or of the namespace)."""
    async with open_system(args) as system:
        if args.user:
            found = await system.list_user_sessions(args.user)
        else:
            store, found = system.store, []
            async for key in store.client.scan_iter(match=store.keys.session_pattern(), count=1000):
                sid = store.keys.session_id_of_key(key.decode())
                session = await store.find_by_id(sid)
                if session is not None:
                    found.append(session)
                if len(found) >= args.limit:
                    break
    found.sort(key=lambda s: s.updated_at, reverse=True)
    found = found[: args.limit]
    if args.json:
        print_json([s.to_dict() for s in found])
    else:
        print_table(
            ("session", "state", "version", "messages", "updated"), [_row(s) for s in found]
        )
    return 0


async def show(args: argparse.Namespace) -> int:
    """Print one session; exit 1 if it does not exist."""
    async with open_system(args) as system:
        session = await system.get_session(args.session_id)
    if session is None:
        raise SessionNotFound(args.session_id)
    if args.json:
        print_json(session.to_dict())
    else:
        for name, value in session.to_dict().items():
            print(f"{name:<14} {value}")
    return 0


async def delete(args: argparse.Namespace) -> int:
    """Delete sessions; exit 1 if any did not exist."""
    missing = 0
    async with open_system(args) as system:
        for session_id in args.session_ids:
            deleted = await system.delete_session(session_id)
            missing += not deleted
            print(f"{'deleted' if deleted else 'not found'}  {session_id}")
    return 1 if missing else 0
