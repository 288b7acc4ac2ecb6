"""Restore orchestration: verify a whole chain first, then load it newest link first."""

from __future__ import annotations

import asyncio
import os
import time
from functools import partial

from ..errors import ValidationError
from .changes import pipelined
from .restore import Decide, Progress, Restorer, RestoreReport, check_strategy
from .settings import Settings
from .verify import Verifier


class ChainRestorer:
    """restore_backup(): nothing is written until every link of the chain passed its checks."""

    def __init__(self, settings: Settings, verifier: Verifier) -> None:
        self.settings = settings
        self.verifier = verifier

    async def restore_backup(
        self,
        backup_id: str | os.PathLike[str],
        strategy: str = "merge",
        *,
        decide: Decide | None = None,
        allow_pickle: bool = False,
        progress: bool = False,
    ) -> RestoreReport:
        """Verify the backup (and its chain) completely, then load it with the strategy."""
        strategy = check_strategy(strategy)
        if strategy == "interactive" and decide is None:
            raise ValidationError(
                "strategy 'interactive' needs a decide(stored, incoming) callback"
            )
        store = self.settings.store
        began = time.monotonic()
        # Nothing is written until every link passed every check.
        links, verified = await asyncio.to_thread(
            partial(self.verifier.verify_chain, backup_id, allow_pickle, deep=False)
        )
        report = RestoreReport(str(backup_id), strategy, chain=list(verified.chain))
        restorer = Restorer(store)
        if strategy == "replace":
            # The wipe deletes sessions without telling the change index: cut the chain first,
            # so a restore interrupted anywhere after this point (kill -9 mid-wipe) leaves no
            # head an incremental could silently continue from.
            await pipelined(store.client, [("delete", (store.keys.backup_head(),))])
            # Scripts loaded before the wipe: a server that lost them (restart, SCRIPT FLUSH)
            # fails here, with nothing deleted, rather than after.
            await restorer.load_scripts()
            report.wiped = await restorer.wipe()
        mode = "replace" if strategy == "replace" else strategy
        bar = (
            Progress(
                f"restore {backup_id}", verified.sessions + verified.tombstones + verified.events
            )
            if progress
            else None
        )
        superseded: set[str] = set()
        # Two batches in flight: Redis runs one batch's scripts while we encode the next.
        # Interactive stays sequential so questions never interleave.
        in_flight: set[asyncio.Task[None]] = set()
        limit = 1 if strategy == "interactive" else 2
        try:
            for depth, (link, checked) in enumerate(reversed(links)):
                newest_first = depth < len(links) - 1
                for records in self.verifier.read_records(link, allow_pickle, checked=checked):
                    read = len(records)
                    if superseded:
                        records = [r for r in records if r[1] not in superseded]
                    if newest_first:
                        # Newest link first: a session's latest record wins; older links skip.
                        # The filter above ran before this update, so a session's "s" and
                        # "e" records of one link (one part) stay together: its stream comes
                        # from the same link as its hash, or not at all.
                        superseded.update(r[1] for r in records)
                    if len(in_flight) >= limit:
                        done, in_flight = await asyncio.wait(
                            in_flight, return_when=asyncio.FIRST_COMPLETED
                        )
                        for task in done:
                            task.result()
                    in_flight.add(
                        asyncio.create_task(restorer.apply(records, mode, report, decide))
                    )
                    if bar:
                        bar.update(read)
            for task in in_flight:
                await task
        finally:
            for task in in_flight:
                task.cancel()
        if bar:
            bar.close()
        report.seconds = time.monotonic() - began
        return report
