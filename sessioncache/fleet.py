"""Fleet jobs: an APScheduler job scheduled in every process that runs once per interval.

Every process schedules the job; each tick runs fleet_claim.lua, which numbers intervals by the
server's clock and lets exactly one tick per interval through, holding a lease so runs never
overlap. A holder that dies mid-run leaves its lease to lapse; the next tick (this interval or
the next) takes the interval over and its run is told which interval it covers (``missed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from base64 import urlsafe_b64encode
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from .errors import BackendUnavailable, ValidationError
from .keys import KeySchema
from .locks import RedisLock
from .scripts import Script, registry

log = logging.getLogger(__name__)

MIN_INTERVAL = 0.1
"""Shortest interval a fleet job accepts, in seconds."""


@dataclass(frozen=True, slots=True)
class FleetRun:
    """One run of a fleet job, as its function sees it."""

    job: str
    interval: int
    """The interval number this run claimed: floor(server time in ms / interval in ms)."""
    missed: int | None
    """An interval whose holder died before finishing it; this run covers it too."""
    token: str


@dataclass(frozen=True, slots=True)
class FleetJobStatus:
    """What Redis says about a fleet job (for health checks and operators)."""

    job: str
    holder: str | None
    """host:pid of the process that claimed the latest interval."""
    running: bool
    """Whether a run holds the lease now."""
    claimed: int | None
    completed: int | None
    last_started_ms: int | None
    last_finished_ms: int | None
    last_status: str | None
    """"ok", or "error:<exception type>" (never the message: it could carry a path or URL)."""
    runs: int
    takeovers: int
    interval_ms: int | None = None
    """The interval the last claim used (every process of the fleet schedules the same)."""

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-ready)."""
        return {name: getattr(self, name) for name in self.__slots__}


JobFunc = Callable[[FleetRun], Awaitable[Any]]


def _seconds(value: object, what: str, low: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
        raise ValidationError(f"{what} must be at least {low} seconds, got {value!r}")
    if value > 86400 * 366:
        raise ValidationError(f"{what} must be at most a year, got {value!r}")
    return float(value)


class FleetJob:
    """A job that runs once per ``interval`` across every process that schedules it.

    The lease is ``KeySchema.lease(name)``: a job named like a manual operation's lease (the
    ``backup`` lease of ``create_backup()``) never overlaps that operation. ``lease_ttl``
    bounds how long a dead holder blocks the job; a live holder renews the lease every third
    of it, so a run may take longer than the TTL.
    """

    def __init__(
        self,
        client: Any,
        keys: KeySchema,
        name: str,
        interval: float,
        func: JobFunc,
        *,
        lease_ttl: float = 30.0,
    ) -> None:
        self.client = client
        self.name = name
        self.interval = _seconds(interval, f"{name} interval", MIN_INTERVAL)
        self.lease_ttl = _seconds(lease_ttl, f"{name} lease_ttl", 0.05)
        self.func = func
        self.state_key = keys.fleet_job(name)
        self.lease_key = keys.lease(name)
        self.label = f"{socket.gethostname()}:{os.getpid()}"
        self._claim: Script = registry().fleet_claim
        self._finish: Script = registry().fleet_finish
        self.current: asyncio.Task[Any] | None = None
        """The task of this process's run in progress, if any (await it to drain)."""

    @property
    def _interval_ms(self) -> int:
        return max(1, round(self.interval * 1000))

    async def claim(self) -> FleetRun | None:
        """Claim the current interval (and the lease) for this process, or None."""
        token = urlsafe_b64encode(os.urandom(18)).decode()
        ttl_ms = max(1, round(self.lease_ttl * 1000))
        args = [str(self._interval_ms), token, str(ttl_ms), self.label]
        ok, n, missed = await self._claim.run(self.client, [self.state_key, self.lease_key], args)
        if ok != 1:
            return None
        return FleetRun(self.name, int(n), None if int(missed) < 0 else int(missed), token)

    async def finish(self, run: FleetRun, status: str = "ok") -> bool:
        """Record the run's end and release its lease; False if it had lost its claim."""
        args = [run.token, str(run.interval), status]
        done = await self._finish.run(self.client, [self.state_key, self.lease_key], args)
        return int(done) != 0

    async def run_once(self) -> Any:
        """The scheduled body: claim this interval, run the function under the lease, record.

        Returns the function's result, or None when another process has this interval (or a
        run is in progress). An exception from the function is logged and recorded as the
        run's status (the interval counts as done: a failing job is not retried by every
        process); a run cancelled or killed before it finishes is taken over by the next tick.
        """
        try:
            run = await self.claim()
        except BackendUnavailable as exc:
            log.warning("fleet job %s: cannot claim its interval: %s", self.name, exc)
            return None
        if run is None:
            return None
        self.current = asyncio.current_task()
        lock = RedisLock(self.client, self.lease_key, timeout=self.lease_ttl)
        lock.token = run.token.encode()
        keeper = asyncio.create_task(self._keep(lock))
        status: str | None = "ok"
        try:
            return await self.func(run)
        except Exception as exc:
            status = f"error:{type(exc).__name__}"
            log.error("fleet job %s failed in interval %d: %s", self.name, run.interval, exc)
            return None
        except BaseException:
            status = None  # cancelled (a scheduler shutting down): not done, free the lease
            raise
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            self.current = None
            await self._record(run, lock, status)

    async def _record(self, run: FleetRun, lock: RedisLock, status: str | None) -> None:
        try:
            if status is None:
                await lock.release()  # the next tick takes the interval over at once
            elif not await self.finish(run, status):
                log.warning("fleet job %s lost interval %d to a takeover", self.name, run.interval)
        except BackendUnavailable as exc:
            # The lease lapses on its own; the next tick sees the interval as missed.
            log.warning("fleet job %s: cannot record its run: %s", self.name, exc)

    async def _keep(self, lock: RedisLock) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            with contextlib.suppress(BackendUnavailable):
                if not await lock.extend():
                    return

    async def drain(self) -> None:
        """Wait for this process's run in progress, if any, to finish (before a shutdown)."""
        task = self.current
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    def schedule(self, scheduler: Any) -> None:
        """Add this job to an APScheduler 3.x scheduler (AsyncIOScheduler) in this process."""
        scheduler.add_job(
            self.run_once,
            "interval",
            seconds=self.interval,
            id=f"sessioncache-{self.name}",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(self.interval)),
        )

    async def status(self) -> FleetJobStatus:
        """The job's state as recorded in Redis."""
        return await read_job_status(self.client, self.state_key, self.lease_key, self.name)


async def read_job_status(client: Any, state_key: str, lease_key: str, name: str) -> FleetJobStatus:
    """A fleet job's state as recorded in Redis, read by any process (scheduling it or not)."""
    try:
        raw = await client.hgetall(state_key)
        running = bool(await client.exists(lease_key))
    except RedisError as exc:
        raise BackendUnavailable(f"Redis unavailable reading fleet job {name}: {exc}") from exc
    text = {k.decode(): v.decode() for k, v in raw.items()}

    def num(field: str) -> int | None:
        return int(text[field]) if field in text else None

    return FleetJobStatus(
        job=name,
        holder=text.get("holder"),
        running=running,
        claimed=num("claimed"),
        completed=num("completed"),
        last_started_ms=num("started"),
        last_finished_ms=num("finished"),
        last_status=text.get("status"),
        runs=num("runs") or 0,
        takeovers=num("takeovers") or 0,
        interval_ms=num("interval"),
    )
