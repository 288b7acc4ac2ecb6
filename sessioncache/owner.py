"""Which process owns a lease or a temporary file, and whether that process is gone."""

from __future__ import annotations

import functools
import os
import re

_TAG = re.compile(r"([0-9a-f]{16})-(\d{1,10})")


@functools.cache
def _namespace_id() -> str | None:
    """This boot's id and this PID namespace's inode, hashed: two processes see each other's
    PIDs exactly when they share it (containers on one kernel share the boot, not the ns)."""
    import hashlib

    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as file:
            boot = file.read().strip()
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return hashlib.sha256(boot + b"/%d" % ns).hexdigest()[:16]


def process_tag() -> str:
    """``<pid-namespace id>-<pid>`` of this process (``x-<pid>`` where it cannot be known)."""
    return f"{_namespace_id() or 'x'}-{os.getpid()}"


def is_dead(tag: str) -> bool:
    """True only if ``tag`` names a process of our PID namespace that no longer runs.

    Anything else (another host, another container, an unknown tag, a PID reused) counts as
    alive: a caller then waits for a TTL instead of taking over from a live owner.
    """
    match = _TAG.fullmatch(tag)
    ours = _namespace_id()
    if match is None or ours is None or match[1] != ours:
        return False
    pid = int(match[2])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, owned by another user
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    # A killed child not yet reaped by its parent still answers kill(pid, 0).
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"Z"
