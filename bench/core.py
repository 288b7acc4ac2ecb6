"""Core operations against the raw redis-py call of the same round trip."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, default=2000, help="operations per round")


async def run(args: argparse.Namespace) -> bool:
    raise SystemExit("bench core: being written")
