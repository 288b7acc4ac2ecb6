"""link start|confirm|list|remove and conflicts list|resolve (cross-channel sync)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from .common import connection_options, json_option, open_system, print_json, print_table


def register(sub: Any) -> None:
    """Add the link and conflicts groups."""
    common, as_json = connection_options(), json_option()
    group = sub.add_parser("link", help="link a person's identities across channels")
    actions = group.add_subparsers(dest="action", required=True)
    p = actions.add_parser("start", parents=[common, as_json], help="issue a one-time code")
    p.add_argument("platform")
    p.add_argument("user_id")
    p.set_defaults(handler=start)
    p = actions.add_parser("confirm", parents=[common, as_json], help="redeem a code")
    p.add_argument("platform")
    p.add_argument("user_id")
    p.add_argument("code")
    p.set_defaults(handler=confirm)
    p = actions.add_parser("list", parents=[common, as_json], help="an identity's person")
    p.add_argument("platform")
    p.add_argument("user_id")
    p.set_defaults(handler=list_links)
    p = actions.add_parser("remove", parents=[common, as_json], help="unlink an identity")
    p.add_argument("platform")
    p.add_argument("user_id")
    p.set_defaults(handler=remove)

    group = sub.add_parser("conflicts", help="sync conflicts kept for review")
    actions = group.add_subparsers(dest="action", required=True)
    p = actions.add_parser("list", parents=[common, as_json], help="every open conflict")
    p.add_argument("--session", help="only this session's")
    p.set_defaults(handler=list_conflicts)
    p = actions.add_parser("resolve", parents=[common, as_json], help="settle one conflict")
    p.add_argument("conflict_id")
    p.add_argument("--choose", choices=("incoming", "stored"), default="incoming")
    p.set_defaults(handler=resolve)


def _out(args: argparse.Namespace, value: Any, text: str) -> int:
    if args.json:
        print_json(value)
    else:
        print(text)
    return 0


async def start(args: argparse.Namespace) -> int:
    """Print a one-time link code for the identity."""
    async with open_system(args) as system:
        code = await system.start_link(args.platform, args.user_id)
    return _out(args, {"code": code}, code)


async def confirm(args: argparse.Namespace) -> int:
    """Link the identity with the code's; exit 1 if the code is refused."""
    async with open_system(args) as system:
        person = await system.confirm_link(args.platform, args.user_id, args.code)
        ids = await system.linked_identities(args.platform, args.user_id)
    return _out(args, {"person": person, "identities": ids}, " ".join(ids))


async def list_links(args: argparse.Namespace) -> int:
    """Print the identity's person's identities (itself included)."""
    async with open_system(args) as system:
        ids = await system.linked_identities(args.platform, args.user_id)
    return _out(args, ids, "\n".join(ids))


async def remove(args: argparse.Namespace) -> int:
    """Unlink the identity; exit 1 if it was not linked."""
    async with open_system(args) as system:
        removed = await system.unlink(args.platform, args.user_id)
    _out(args, {"removed": removed}, "removed" if removed else "not linked")
    return 0 if removed else 1


async def list_conflicts(args: argparse.Namespace) -> int:
    """Print open conflicts (both values of each)."""
    async with open_system(args) as system:
        found = await system.list_conflicts(args.session)
    if args.json:
        print_json([dataclasses.asdict(c) for c in found])
    else:
        print_table(
            ("conflict", "session", "field", "stored", "incoming", "from"),
            [(c.conflict_id, c.session_id, c.field, c.stored, c.incoming, c.origin)
             for c in found],
        )
    return 0


async def resolve(args: argparse.Namespace) -> int:
    """Settle a conflict with the incoming or the stored value."""
    async with open_system(args) as system:
        c = await system.resolve_conflict(args.conflict_id, args.choose)
    return _out(args, {"resolved": c.conflict_id, "field": c.field}, f"resolved {c.conflict_id}")
