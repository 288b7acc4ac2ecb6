"""Timing helpers shared by every benchmark: interleaved rounds, percentiles, ratio tables."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sessioncache.embedded import EmbeddedRedis

Op = Callable[[int], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Stats:
    """One measurement: n operations, their wall time and per-op latencies (seconds)."""

    n: int
    seconds: float
    latencies: tuple[float, ...]

    @property
    def ops_per_s(self) -> float:
        return self.n / self.seconds

    def percentile_us(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


async def _timed(op: Op, i: int, out: list[float]) -> None:
    began = time.perf_counter()
    await op(i)
    out.append(time.perf_counter() - began)


async def run_sequential(op: Op, n: int) -> Stats:
    lat: list[float] = []
    began = time.perf_counter()
    for i in range(n):
        await _timed(op, i, lat)
    return Stats(n, time.perf_counter() - began, tuple(lat))


async def run_concurrent(op: Op, n: int, tasks: int = 50) -> Stats:
    """n operations spread over `tasks` asyncio tasks."""
    lat: list[float] = []
    per_task = max(1, n // tasks)

    async def worker(t: int) -> None:
        for j in range(per_task):
            await _timed(op, t * per_task + j, lat)

    began = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    return Stats(per_task * tasks, time.perf_counter() - began, tuple(lat))


def _merge(runs: list[Stats]) -> Stats:
    """The median batch's time per operation, with every batch's latencies."""
    median = statistics.median(r.seconds / r.n for r in runs)
    lat = tuple(x for r in runs for x in r.latencies)
    n = sum(r.n for r in runs)
    return Stats(n, median * n, lat)


async def compare(
    ours: Op,
    raw: Op,
    n: int,
    *,
    rounds: int = 5,
    concurrent: int = 0,
    warmup: int = 200,
    batch: int | None = None,
) -> tuple[Stats, Stats]:
    """Time `rounds` x `n` operations of each, in short alternating batches.

    Batches alternate in ABBA order, so bursts of load from other processes fall on both sides
    alike; each side's figure is its median batch. Sequential batches are 100 operations,
    concurrent ones `n` (spread over `concurrent` tasks).
    """
    size = batch or (n if concurrent else min(n, 100))
    runner = (lambda op, k: run_concurrent(op, k, concurrent)) if concurrent else run_sequential
    await run_sequential(ours, warmup)
    await run_sequential(raw, warmup)
    ours_runs, raw_runs = [], []
    for i in range(rounds * max(1, n // size)):
        first, second = (raw, ours) if i % 2 == 0 else (ours, raw)
        a = await runner(first, size)
        b = await runner(second, size)
        (raw_runs if first is raw else ours_runs).append(a)
        (ours_runs if first is raw else raw_runs).append(b)
    return _merge(ours_runs), _merge(raw_runs)


@dataclass(slots=True)
class Row:
    name: str
    ours: Stats
    raw: Stats
    target: float

    @property
    def ratio(self) -> float:
        """Our time per operation over raw redis-py's (lower is better)."""
        return self.raw.ops_per_s / self.ours.ops_per_s


def print_table(title: str, rows: list[Row]) -> bool:
    """Print ops/s, p50/p99 (us) and ratio for each row; True if every target holds."""
    print(f"\n{title}")
    head = f"{'operation':<34}{'ours ops/s':>11}{'raw ops/s':>11}{'p50 us':>9}{'p99 us':>9}"
    print(head + f"{'raw p50':>9}{'raw p99':>9}{'ratio':>8}{'target':>8}  ok")
    ok_all = True
    for row in rows:
        ok = row.ratio <= row.target
        ok_all &= ok
        print(
            f"{row.name:<34}{row.ours.ops_per_s:>11.0f}{row.raw.ops_per_s:>11.0f}"
            f"{row.ours.percentile_us(0.5):>9.0f}{row.ours.percentile_us(0.99):>9.0f}"
            f"{row.raw.percentile_us(0.5):>9.0f}{row.raw.percentile_us(0.99):>9.0f}"
            f"{row.ratio:>8.2f}{row.target:>8.2f}  {'yes' if ok else 'NO'}"
        )
    return ok_all


@contextmanager
def server(url: str | None) -> Iterator[str]:
    """The given URL, or a private redis-server started for this run."""
    if url:
        yield url
        return
    with EmbeddedRedis() as embedded:
        yield embedded.url
