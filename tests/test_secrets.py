"""No password or key in any repr, str, log line or exception message (issue #10.5).

One matrix of URL shapes (every place a Redis URL can carry a password) against every path
that shows a URL, settings or a key: reprs, validation errors, connection errors (the whole
exception chain), log records, the CLI, and the backup key in config reprs and backup errors.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from pathlib import Path
from typing import Any

import pytest

from sessioncache import BackendUnavailable, SessionStore, ValidationError
from sessioncache.backends import RedisSettings, connect
from sessioncache.cli import main
from sessioncache.embedded import free_port
from sessioncache.persistence import Persistence
from sessioncache.redaction import redact_url, url_secrets
from sessioncache.storage import resolve_storage
from sessioncache.system import SessionSystemConfig

SECRET = "Zq9-s3cr3t-Pw-long-enough"
ENCODED = "p%40ss-Zq9"  # percent-encoded in the URL: 'p@ss-Zq9' once decoded


def _shapes() -> list[Any]:
    port = free_port()
    sock = f"/tmp/sessioncache-absent-{uuid.uuid4().hex[:8]}.sock"
    shapes = {
        "user-pass": f"redis://bot:{SECRET}@127.0.0.1:{port}/0",
        "pass-only": f"redis://:{SECRET}@127.0.0.1:{port}",
        "query-password": f"redis://127.0.0.1:{port}/0?password={SECRET}",
        "query-ssl-password": f"rediss://127.0.0.1:{port}/0?ssl_password={SECRET}&db=0",
        "rediss": f"rediss://bot:{SECRET}@127.0.0.1:{port}",
        "unix-user-pass": f"unix://bot:{SECRET}@{sock}",
        "unix-query": f"unix://{sock}?db=0&password={SECRET}",
        "cluster": f"redis+cluster://bot:{SECRET}@127.0.0.1:{port}",
        "cluster-tls": f"rediss+cluster://:{SECRET}@127.0.0.1:{port}",
        "encoded": f"redis://:{ENCODED}@127.0.0.1:{port}",
        "both": f"redis://bot:{SECRET}@127.0.0.1:{port}/0?password={SECRET}",
    }
    return [pytest.param(url, id=name) for name, url in shapes.items()]


SHAPES = _shapes()


def assert_clean(*texts: object) -> None:
    for text in texts:
        shown = str(text)
        for secret in (SECRET, ENCODED, "p@ss-Zq9"):
            assert secret not in shown, shown


def assert_clean_exception(exc: BaseException) -> None:
    """The message, repr and whole chain (causes and contexts) as a traceback prints them."""
    assert_clean(str(exc), repr(exc), "".join(traceback.format_exception(exc)))


def _mistyped(url: str) -> list[str]:
    scheme, rest = url.split("://", 1)
    return [f"redsi://{rest}", f"{scheme}//{rest}", rest, f"http://{rest}"]


@pytest.mark.parametrize("url", SHAPES)
def test_settings_reprs_hide_the_password(url: str) -> None:
    settings = RedisSettings(url, extra={"password": SECRET, "ssl_password": SECRET})
    assert_clean(repr(settings), str(settings), redact_url(url), settings.with_url(url))
    assert "***" in repr(settings)
    assert SECRET in url_secrets(url) or "p@ss-Zq9" in url_secrets(url)


@pytest.mark.parametrize("url", SHAPES)
def test_validation_errors_hide_the_password(url: str) -> None:
    for bad in _mistyped(url):
        with pytest.raises(ValidationError) as caught:
            RedisSettings(bad)
        assert_clean_exception(caught.value)
    with pytest.raises(ValidationError) as caught:
        resolve_storage("MEMORY", {"url": url})
    assert_clean_exception(caught.value)
    with pytest.raises(ValidationError) as caught:
        RedisSettings.from_options(url, no_such_option=SECRET)
    assert_clean_exception(caught.value)


@pytest.mark.parametrize("url", SHAPES)
async def test_connection_errors_and_logs_hide_the_password(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = connect(RedisSettings(url, retries=0))
    try:
        assert_clean(repr(client), str(client))
    finally:
        await client.aclose()
    with pytest.raises(BackendUnavailable) as caught:
        await SessionStore.connect(url, retries=0, socket_connect_timeout=1.0)
    assert_clean_exception(caught.value)
    assert "***" in str(caught.value)
    assert_clean(*(r.getMessage() for r in caplog.records), caplog.text)


@pytest.mark.parametrize("url", SHAPES)
def test_cli_errors_hide_the_password(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scripts", "check", "--url", url]) == 1
    out = capsys.readouterr()
    assert len(out.err.strip().splitlines()) == 1
    assert_clean(out.out, out.err)


def test_the_backup_key_is_never_shown(tmp_path: Path) -> None:
    for key in (SECRET, SECRET.encode()):
        config = SessionSystemConfig(backup_key=key, backup_dir=str(tmp_path))
        assert_clean(repr(config), str(config))


async def test_a_wrong_backup_key_error_does_not_show_either_key(
    memory_url: str, tmp_path: Path
) -> None:
    store = await SessionStore.connect(memory_url, namespace="secrets")
    try:
        await store.create("c", "u", "telegram", data={"a": 1})
        writer = Persistence(store, backup_dir=str(tmp_path), key=SECRET)
        backup_id = await writer.create_backup("signed")
        reader = Persistence(store, backup_dir=str(tmp_path), key="another-" + SECRET[::-1])
        report = await reader.verify_backup(backup_id)
        assert not report.ok
        assert_clean(report.error, repr(report), repr(writer), repr(reader))
        assert SECRET[::-1] not in str(report.error)
    finally:
        await store.close()
