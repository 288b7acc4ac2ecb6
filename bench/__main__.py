"""``python -m bench SUITE [--url URL]``: run one benchmark suite and print ratio tables."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import pkgutil
import sys

import bench

# Every bench/<suite>.py with add_arguments() and run() is a suite.
SUITES = {
    m.name: f"bench.{m.name}"
    for m in pkgutil.iter_modules(bench.__path__)
    if m.name not in ("common", "__main__")
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="suite", required=True)
    for name, module_name in SUITES.items():
        module = importlib.import_module(module_name)
        if not hasattr(module, "add_arguments"):
            continue  # a helper module (evaluation.py), not a suite
        p = sub.add_parser(name, help=module.__doc__)
        p.add_argument("--url", help="Redis URL (default: a private redis-server for this run)")
        module.add_arguments(p)
    args = parser.parse_args()
    module = importlib.import_module(SUITES[args.suite])
    ok = asyncio.run(module.run(args))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
