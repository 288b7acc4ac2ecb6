"""A private redis-server on a free loopback port, in a temp dir: for tests, the bench and demos."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .errors import BackendUnavailable


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(cluster_bus: bool = False) -> int:
    """A free loopback port; with cluster_bus, port + 10000 (Redis Cluster's bus) is free too."""
    for _ in range(200):
        port = random.randint(20000, 50000)
        if _bindable(port) and (not cluster_bus or _bindable(port + 10000)):
            return port
    raise BackendUnavailable("no free loopback port found")


def find_server_binary() -> str:
    """redis-server from PATH (or $SESSIONCACHE_REDIS_SERVER)."""
    explicit = os.environ.get("SESSIONCACHE_REDIS_SERVER")
    found = explicit or shutil.which("redis-server") or shutil.which("valkey-server")
    if not found:
        raise BackendUnavailable(
            "no redis-server on PATH: install it (apt-get install -y redis-server) "
            "or set SESSIONCACHE_REDIS_SERVER to a redis-server binary"
        )
    return found


class EmbeddedRedis:
    """Starts and stops one private redis-server; nothing is saved to disk."""

    def __init__(self, *extra_args: str, port: int | None = None) -> None:
        self.extra_args = list(extra_args)
        self._cluster = "--cluster-enabled" in self.extra_args
        self._fixed_port = port is not None
        self.port = port or free_port(self._cluster)
        self.dir = Path(tempfile.mkdtemp(prefix="sessioncache-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server; if another process took the port meanwhile, try another one."""
        for attempt in range(5):
            try:
                return self._start_once(timeout)
            except BackendUnavailable:
                if self._fixed_port or attempt == 4:
                    raise
                self.port = free_port(self._cluster)
        return self

    def _start_once(self, timeout: float) -> EmbeddedRedis:
        args = [
            find_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "redis.log"),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise BackendUnavailable(f"redis-server exited at start:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64)[:1] in (b"+", b"-"):  # PONG, or NOAUTH with ACLs
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BackendUnavailable(f"redis-server did not answer on port {self.port} in {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start on the same port: the script cache and (unsaved) data are gone."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
