"""The CLI's persistence subcommands, run as a real process against a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sessioncache import EventType
from sessioncache.persistence import Persistence
from sessioncache.store import SessionStore
from sessioncache.tracker import StateTracker

from .support.namespaces import drop_namespace, unique_namespace
from .support.persistence_helpers import digest
from .support.tracker_helpers import tracked

ROOT = Path(__file__).resolve().parent.parent
KEY = "cli-key-0123456789abcdef"


def cli(*args: str, stdin: str = "", key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SESSIONCACHE_BACKUP_KEY", None)
    if key:
        env["SESSIONCACHE_BACKUP_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "sessioncache", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


async def test_cli_backup_verify_restore_export_import_migrate_snapshot(
    redis_url: str, tmp_path: Path
) -> None:
    ns = unique_namespace()
    store = await SessionStore.connect(redis_url, namespace=ns)
    try:
        for i in range(30):
            await store.create(i, f"u{i % 3}", "telegram", data={"i": i})
        common = ["--url", redis_url, "--namespace", ns, "--dir", str(tmp_path / "b")]
        full = cli("backup", *common, "--description", "from cli")
        assert full.returncode == 0, full.stderr
        backup_id = full.stdout.strip()
        assert "sessions" in full.stderr  # the progress line
        await store.update("telegram:1:u1", data={"i": -1})
        inc = cli("backup", *common, "--incremental", "--format", "json.gz")
        assert inc.returncode == 0, inc.stderr
        listed = cli("backup", *common, "--list").stdout.splitlines()
        assert len(listed) == 2 and "full" in listed[0] and "incremental" in listed[1]
        state = await digest(store)

        verified = cli("verify", *common, inc.stdout.strip())
        assert verified.returncode == 0 and "ok: 31 sessions" in verified.stdout
        wrong = cli("verify", *common, backup_id, key="some-other-key-0123456789")
        assert wrong.returncode == 1 and "DAMAGED" in wrong.stdout

        await store.update("telegram:2:u2", data={"i": -2})  # v2, newer than the backup's v1
        await store.update("telegram:4:u1", data={"i": -4})
        # interactive: the terminal answers yes for the first conflict and no for the second.
        answered = cli(
            "restore",
            *common,
            inc.stdout.strip(),
            "--strategy",
            "interactive",
            stdin="y\nn\n" + "n\n" * 40,
        )
        assert answered.returncode == 0, answered.stderr
        assert answered.stderr.count("take the backup's version?") >= 2
        restored = cli("restore", *common, inc.stdout.strip(), "--strategy", "replace")
        assert restored.returncode == 0 and "restored 30" in restored.stdout
        assert await digest(store) == state

        out = tmp_path / "one.scb"
        exported = cli("export", *common, "telegram:5:u2", "-o", str(out))
        assert exported.returncode == 0 and out.exists()
        await store.delete("telegram:5:u2")
        imported = cli("import", *common, str(out))
        assert imported.stdout.strip() == "telegram:5:u2"
        assert (await store.get("telegram:5:u2")).data == {"i": 5}

        migrated = cli("migrate", *common, backup_id, "--to", "msgpack")
        assert migrated.returncode == 0 and ".msgpack.scb" in migrated.stdout
        snap = cli("snapshot", *common)
        assert snap.returncode == 0 and Path(snap.stdout.strip()).exists()
        p = Persistence(store, backup_dir=tmp_path / "b", key=KEY)
        assert [b.format for b in p.list_backups()] == ["msgpack", "json.gz"]
        missing = cli("restore", *common, "20990101T000000000000Z-full-x")
        assert missing.returncode == 1 and "no backup with id" in missing.stderr

        # --events: each session's event stream too.
        tracker = StateTracker(tracked(store))
        await tracker.start()
        await tracker.track_event("telegram:7:u1", EventType.MESSAGE_RECEIVED, text="hi")
        stream = store.keys.events_of_session_key(store.keys.restore_keys("telegram:7:u1")[0])
        entries = await store.client.xrange(stream)
        with_events = cli("backup", *common, "--events")
        assert with_events.returncode == 0, with_events.stderr
        listed = cli("backup", *common, "--list").stdout.splitlines()
        assert listed[-1].count("30 sessions, 1 event streams") == 1
        verified = cli("verify", *common, with_events.stdout.strip())
        assert "ok: 30 sessions, 0 tombstones, 1 event streams" in verified.stdout
        await store.client.delete(stream)
        restored = cli("restore", *common, with_events.stdout.strip(), "--strategy", "replace")
        assert "restored 30" in restored.stdout and "event streams 1" in restored.stdout
        assert await store.client.xrange(stream) == entries
        await p.changes.disarm()
    finally:
        await drop_namespace(store.client, ns)
        await store.close()
