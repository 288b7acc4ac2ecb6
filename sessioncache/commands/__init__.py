"""The CLI's command groups: one module each, every one with ``register(subparsers)``.

A group adds its subcommands and sets ``handler`` (an ``async def (args) -> int``) on each;
sessioncache.cli dispatches to it. To add a group, write a module here and list it in GROUPS.
"""

from __future__ import annotations

from types import ModuleType

from . import core, demo, links, server, sessions

GROUPS: tuple[ModuleType, ...] = (demo, core, sessions, server, links)
