"""What every CLI command shares: --url/--namespace/--json, opening the system, printing."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..storage import EMBEDDED_SCHEME, URL_ENV, storage_from_url
from ..system import SessionSystem


def default_url() -> str:
    """$SESSIONCACHE_URL, else the EMBEDDED server of the default data directory."""
    return os.environ.get(URL_ENV) or EMBEDDED_SCHEME


def connection_options() -> argparse.ArgumentParser:
    """A parent parser with --url and --namespace."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--url",
        default=default_url(),
        help=f"redis://, rediss://, unix://, redis+cluster://, memory:// or embedded://DIR "
        f"(default ${URL_ENV}, else embedded:// on the default data directory)",
    )
    parent.add_argument("--namespace", default="sc", help="session namespace (default sc)")
    return parent


def json_option() -> argparse.ArgumentParser:
    """A parent parser with --json."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parent


@contextlib.asynccontextmanager
async def open_system(args: argparse.Namespace, **options: Any) -> AsyncIterator[SessionSystem]:
    """A started system for the command's --url (joining an EMBEDDED server), shut at exit."""
    storage_type, storage_config = storage_from_url(args.url)
    system = await SessionSystem.open(
        storage_type,
        storage_config,
        namespace=getattr(args, "namespace", "sc"),
        health_interval=None,
        **options,
    )
    try:
        yield system
    finally:
        await system.shutdown()


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Left-aligned columns, sized to their widest cell."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
