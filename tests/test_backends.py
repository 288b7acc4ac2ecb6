"""Backends by URL: TLS, unix sockets, ACL users, client names, bad URLs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from sessioncache import BackendUnavailable, SessionStore, ValidationError
from sessioncache.backends import RedisSettings, default_client_name
from sessioncache.embedded import EmbeddedRedis, free_port


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d = tmp_path_factory.mktemp("tls")
    ca_file, cert_file, key_file = d / "ca.pem", d / "cert.pem", d / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    tls_port = free_port()
    server = EmbeddedRedis(
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(cert_file),
        "--tls-key-file", str(key_file),
        "--tls-ca-cert-file", str(ca_file),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    server.start()
    yield f"rediss://127.0.0.1:{tls_port}", ca_file
    server.cleanup()


async def test_rediss_with_a_verified_certificate(tls_server: tuple[str, Path]) -> None:
    url, ca_file = tls_server
    store = await SessionStore.connect(
        f"{url}?ssl_ca_certs={ca_file}", namespace="tls", extra={"ssl_cert_reqs": "required"}
    )
    try:
        s = await store.create("c", "u", "telegram", data={"over": "tls"})
        assert (await store.get(s.session_id)).data == {"over": "tls"}
        await store.delete(s.session_id)
    finally:
        await store.close()


async def test_rediss_refuses_an_unknown_certificate(tls_server: tuple[str, Path]) -> None:
    url, _ = tls_server
    with pytest.raises(BackendUnavailable):
        await SessionStore.connect(url, namespace="tls", retries=0)


async def test_unix_socket_and_acl_user_from_the_url(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    with EmbeddedRedis(
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--user", "default", "off",
        "--user", "bot", "on", ">s3cret", "~*", "&*", "+@all",
    ) as server:  # fmt: skip
        store = await SessionStore.connect(f"unix://bot:s3cret@{sock}", namespace="unix")
        try:
            s = await store.create("c", "u", "telegram")
            assert (await store.get(s.session_id)).version == 1
            names = [c["name"] for c in await store.client.client_list()]
            assert default_client_name() in names
            assert default_client_name() == f"sessioncache:{os.uname().nodename[:40]}:{os.getpid()}"
        finally:
            await store.close()
        with pytest.raises(BackendUnavailable):
            await SessionStore.connect(f"redis://bot:wrong@127.0.0.1:{server.port}", retries=0)
        with pytest.raises(BackendUnavailable):
            await SessionStore.connect(f"redis://127.0.0.1:{server.port}", retries=0)


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("http://localhost", {}),
        ("localhost:6379", {}),
        ("redis://localhost", {"retries": -1}),
        ("redis://localhost", {"protocol": 4}),
        ("redis://localhost", {"max_connections": 0}),
        ("redis://localhost", {"socket_timeout": None}),
        ("redis://localhost", {"pool_timeout": 0}),
        ("redis://localhost", {"no_such_option": 1}),
    ],
)
def test_bad_settings_raise(url: str, options: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError):
        RedisSettings.from_options(url, **options)


def test_defaults_are_explicit() -> None:
    s = RedisSettings()
    assert (s.socket_timeout, s.socket_connect_timeout, s.retries, s.protocol) == (5.0, 2.0, 3, 3)
    assert (s.max_connections, s.pool_timeout, s.pool_wait) == (64, None, None)  # memory://
    assert RedisSettings("redis://localhost").pool_wait == 10.0
    assert RedisSettings("memory://x", pool_timeout=2.5).pool_wait == 2.5
