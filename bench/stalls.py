"""A witness of the machine's stalls: a real-time process on the server's core that wakes every
half millisecond and records how late it woke, so a slow script call can be told from a stalled
CPU.

On a virtual machine the host deschedules a busy vCPU now and then, for milliseconds, and
the guest's own kernel threads take a busy core from the process running there; a command
that happens to run then takes that long too, whatever its work. The witness runs at a
real-time priority above the server's on the same core: nothing in the guest can keep it
from waking on time but the host, interrupts and the kernel itself, so each late wakeup is a span
in which the server could not run either.
It adds two context switches every TICK_S to that core (a few microseconds), and sees a stall
that begins while it sleeps only from its next wakeup on: it may under-count a stall by up to
TICK_S, never over-count one.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

WITNESS_PRIORITY = 60
"""SCHED_FIFO priority of the witness: above the server's (SERVER_PRIORITY)."""

SERVER_PRIORITY = 50
"""SCHED_FIFO priority of the bench's private server: above every normal thread of the guest."""

TICK_S = 0.0005
"""How often the witness wakes."""


@dataclass
class Stall:
    """The core ran nothing for ``ms`` milliseconds, ending at ``end`` (unix time, seconds)."""

    end: float
    ms: float

    def overlaps(self, start: float, stop: float) -> bool:
        return self.end - self.ms / 1000 <= stop and self.end >= start


@dataclass
class Placement:
    """Where the bench put its server: the core it is pinned to, and why not when it is not."""

    cpu: int | None = None
    why_not: str = ""
    stalls: list[Stall] = field(default_factory=list)
    witness: subprocess.Popen[bytes] | None = None
    pid: int = 0
    cpus: set[int] = field(default_factory=set)

    def release(self) -> None:
        """Server and bench back to normal scheduling on every core (for the ratio rows,
        measured as the other benches measure them)."""
        if self.cpu is None:
            return
        os.sched_setscheduler(self.pid, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(self.pid, self.cpus)
        os.sched_setaffinity(0, self.cpus)
        self.cpu = None
        self.why_not = "released after the sweep"

    def describe(self) -> str:
        if self.cpu is None:
            return f"server not pinned ({self.why_not}): stalls of the machine are not witnessed"
        return (
            f"server pinned to cpu {self.cpu} at SCHED_FIFO {SERVER_PRIORITY}, the bench on the "
            f"other cores; a witness at SCHED_FIFO {WITNESS_PRIORITY} on cpu {self.cpu}"
        )


def place_server(pid: int) -> Placement:
    """Pin the server's main thread to the last core at a real-time priority, and this process
    to the other cores, so the guest's own threads do not preempt the server; where the OS
    does not allow it (not Linux, no CAP_SYS_NICE, one core), leave things as they are."""
    if not hasattr(os, "sched_setaffinity") or not hasattr(os, "SCHED_FIFO"):
        return Placement(why_not="no sched_setaffinity on this OS")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Placement(why_not="one core")
    cpu = cpus[-1]
    try:
        os.sched_setaffinity(pid, {cpu})
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(SERVER_PRIORITY))
        os.sched_setaffinity(0, set(cpus[:-1]))
    except OSError as exc:
        return Placement(why_not=f"{type(exc).__name__}: {exc.strerror}")
    return Placement(cpu=cpu, pid=pid, cpus=set(cpus))


def start_witness(placement: Placement, threshold_us: int = 200) -> None:
    if placement.cpu is None:
        return
    placement.witness = subprocess.Popen(
        [sys.executable, "-m", "bench.stalls", str(placement.cpu), str(threshold_us)],
        stdout=subprocess.PIPE,
    )


def stop_witness(placement: Placement) -> list[Stall]:
    if placement.witness is None:
        return []
    placement.witness.send_signal(signal.SIGTERM)
    out, _ = placement.witness.communicate(timeout=30)
    placement.witness = None
    placement.stalls = [Stall(**s) for s in json.loads(out or b"[]")]
    return placement.stalls


def _witness(cpu: int, threshold_us: int) -> None:
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(WITNESS_PRIORITY))
    stop = False

    def end(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, end)
    gc.disable()  # a collection here would itself hold the core and read as a stall
    found: list[tuple[float, float]] = []
    tick = TICK_S
    due = time.monotonic() + tick
    while not stop:
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        now = time.monotonic()
        late = now - due
        if late * 1e6 > threshold_us:
            found.append((time.time(), late * 1000))
            due = now
        due += tick
    json.dump([{"end": e, "ms": round(ms, 3)} for e, ms in found], sys.stdout)


if __name__ == "__main__":
    _witness(int(sys.argv[1]), int(sys.argv[2]))
