"""A worker process on an EMBEDDED data directory, driven line by line over stdin.

``python -m tests.support.embedded_workers DATA_DIR`` prints ``ready <server pid>``, then answers:
``create N PREFIX`` (N sessions, chats PREFIX-0..), ``count PREFIX N`` (how many exist with
data intact), ``exit`` (clean shutdown, printing ``bye``). The process can also be killed.
"""

from __future__ import annotations

import asyncio
import sys

from sessioncache import Platform, initialize_sessions, shutdown_sessions


async def main(data_dir: str) -> None:
    system = await initialize_sessions(
        storage_type="EMBEDDED", storage_config={"data_dir": data_dir}, health_interval=None
    )
    assert system.storage is not None and system.storage.server is not None
    print("ready", system.storage.server.running_pid(), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not line or line[0] == "exit":
            break
        if line[0] == "create":
            n, prefix = int(line[1]), line[2]
            for i in range(n):
                await system.create_session(f"{prefix}-{i}", "u", Platform.TELEGRAM, data={"i": i})
            print("created", n, flush=True)
        elif line[0] == "count":
            prefix, found = line[1], 0
            for i in range(int(line[2])):
                s = await system.get_session(f"telegram:{prefix}-{i}:u")
                found += s is not None and s.data == {"i": i}
            print("count", found, flush=True)
    await shutdown_sessions()
    print("bye", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
