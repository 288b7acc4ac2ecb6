"""100,000 sessions round-trip through every backup format (slow: runs in CI, bounded).

Every format's backup is decoded back to the exact records of the reference backup and
restored into an empty database at full size; the comparison runs inside Redis (DEBUG
DIGEST-VALUE per key, plus a sample of expiries).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sessioncache.embedded import EmbeddedRedis
from sessioncache.persistence import FORMATS, Persistence
from sessioncache.persistence.container import BackupReader
from sessioncache.store import SessionStore

from .support.persistence_helpers import bulk_load

N = 100_000
KEY = "large-key-0123456789abcdef"


async def _server_digests(store: SessionStore) -> dict[bytes, Any]:
    """Every session key -> Redis's own digest of its value, plus a sample of expiries."""
    client = store.client
    keys = sorted(
        [k async for k in client.scan_iter(match=store.keys.session_pattern(), count=5000)]
    )
    out: dict[bytes, Any] = {}
    for start in range(0, len(keys), 5000):
        chunk = keys[start : start + 5000]
        digests = await client.execute_command("DEBUG", "DIGEST-VALUE", *chunk)
        out.update(zip(chunk, digests, strict=True))
    async with client.pipeline(transaction=False) as pipe:
        for key in keys[::97]:
            pipe.pexpiretime(key)
        for key, expiry in zip(keys[::97], await pipe.execute(), strict=True):
            out[key + b"#expiry"] = expiry
    return out


def _records_digest(path: Path) -> tuple[int, str]:
    """Count and order-independent digest of the records a backup file decodes to."""
    per_record = []
    with BackupReader(path) as reader:
        for records in reader.records(pickle_allowed=True):
            for _, sid, expiry, fields in records:
                h = hashlib.sha256(f"{sid}\0{expiry}".encode())
                for name in sorted(fields):
                    h.update(b"\1" + name + b"\2" + fields[name])
                per_record.append(h.digest())
    return len(per_record), hashlib.sha256(b"".join(sorted(per_record))).hexdigest()


class Big:
    """One private server holding 100,000 sessions in db 0; restores go to db 1."""

    def __init__(self, tmp: Path) -> None:
        self.server = EmbeddedRedis("--enable-debug-command", "local").start()
        self.tmp = tmp

    async def load(self) -> Big:
        url = self.server.url
        self.source = await SessionStore.connect(url + "/0", namespace="big", socket_timeout=30)
        self.target = await SessionStore.connect(url + "/1", namespace="big", socket_timeout=30)
        await bulk_load(self.source, N, fields=6, user_groups=20_000)
        self.expected = await _server_digests(self.source)
        assert len(self.expected) == N + len(range(0, N, 97))
        self.backups = Persistence(self.source, backup_dir=self.tmp, key=KEY, batch_size=2000)
        self.restorer = Persistence(self.target, backup_dir=self.tmp, key=KEY, batch_size=2000)
        # The reference: a msgpack.gz backup restored into Redis and checked against it there.
        backup_id = await self.backups.create_backup(format="msgpack.gz")
        self.reference = _records_digest(self.backups.find(backup_id))
        await self.restore_and_compare(backup_id)
        return self

    async def restore_and_compare(self, backup_id: str) -> None:
        pickled = ".pickle" in self.restorer.find(backup_id).name
        report = await self.restorer.restore_backup(backup_id, "merge", allow_pickle=pickled)
        assert (report.written, report.kept, report.expired) == (N, 0, 0)
        assert await _server_digests(self.target) == self.expected
        await self.target.client.flushdb()

    async def close(self) -> None:
        await self.source.close()
        await self.target.close()
        self.server.cleanup()


@pytest.fixture(scope="module")
async def big(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Big]:
    b = Big(tmp_path_factory.mktemp("big"))
    try:
        yield await b.load()
    finally:
        await b.close()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
async def test_100k_sessions_round_trip(big: Big, fmt: str) -> None:
    backup_id = await big.backups.create_backup(format=fmt)
    path = big.backups.find(backup_id)
    assert _records_digest(path) == big.reference
    await big.restore_and_compare(backup_id)
    path.unlink()
