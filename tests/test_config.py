"""Configuration: the config's fields are initialize_sessions' options; presets, env, TOML."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sessioncache import (
    ConfigManager,
    Platform,
    SessionSystemConfig,
    TrackerConfig,
    ValidationError,
    get_development_config,
    get_production_config,
    initialize_sessions,
    shutdown_sessions,
)
from sessioncache.backends import forget_memory_server
from sessioncache.storage import resolve_storage


@pytest.fixture(autouse=True)
async def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    for name in ("SESSIONCACHE_URL", "SESSIONCACHE_CONFIG", "SESSIONCACHE_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SESSIONCACHE_DATA_DIR", str(tmp_path / "data"))
    forget_memory_server("default")
    yield
    await shutdown_sessions()
    forget_memory_server("default")


def test_config_fields_are_exactly_the_options_of_initialize_sessions() -> None:
    params = inspect.signature(initialize_sessions).parameters
    named = [n for n, p in params.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    fields = SessionSystemConfig.option_names()
    assert named == fields[: len(named)]
    # The one keyword that is not configuration: what to do when a system already runs.
    assert [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY] == ["replace"]
    assert "__slots__" not in SessionSystemConfig.__dict__
    assert set(vars(SessionSystemConfig())) == set(fields)


async def test_config_dict_round_trips_through_initialize_sessions(tmp_path: Path) -> None:
    config = get_development_config(namespace="devcfg", backup_dir=tmp_path / "b")
    system = await initialize_sessions(**config.__dict__)
    assert system.config.namespace == "devcfg" and system.storage is not None
    assert system.storage.kind == "MEMORY"
    s = await system.create_session("c", "u", Platform.WEB)
    assert (await system.get_session(s.session_id)) is not None
    assert system.config.archive_dir == tmp_path / "data" / "archive"  # the documented default


async def test_enable_all_features_defaults_dirs_under_the_data_directory(tmp_path: Path) -> None:
    system = await initialize_sessions(enable_all_features=True)
    assert system.config.backup_dir == tmp_path / "data" / "backups"
    backup_id = await system.create_backup(description="default dir")
    assert (await system.verify_backup(backup_id)).ok
    assert any((tmp_path / "data" / "backups").iterdir())


def test_production_preset(tmp_path: Path) -> None:
    config = get_production_config(
        storage_config={"db_path": str(tmp_path / "prod" / "sessions.db")},
        backup_dir=tmp_path / "backups",
        archive_dir=tmp_path / "archive",
        namespace="prod",
    )
    assert config.enable_all_features and config.backup_interval == 3600.0
    assert config.namespace == "prod" and config.backup_events is True
    storage = resolve_storage(config.storage_type, config.storage_config)
    assert storage.kind == "EMBEDDED" and storage.server is not None
    assert storage.server.data_dir == tmp_path / "prod"
    assert storage.server.db_name == "sessions.db"


def test_unknown_options_raise_listing_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"colour.*known: storage_type, storage_config"):
        get_development_config(colour="blue")
    bad = tmp_path / "bad.toml"
    bad.write_text('[sessioncache]\nnamespce = "x"\n')
    with pytest.raises(ValidationError, match=r"namespce in file .*known:"):
        ConfigManager(environ={}).load(bad)


def test_sessioncache_url_is_the_default_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONCACHE_URL", "redis://:hunter2@10.0.0.5:6380/0")
    storage = resolve_storage(None, None)
    assert (storage.kind, storage.url) == ("REDIS", "redis://:hunter2@10.0.0.5:6380/0")
    assert "hunter2" not in repr(storage)
    assert resolve_storage("REDIS", None).url == "redis://:hunter2@10.0.0.5:6380/0"
    monkeypatch.setenv("SESSIONCACHE_URL", "redis+cluster://10.0.0.5:7000")
    assert resolve_storage(None, None).kind == "CLUSTER"
    monkeypatch.setenv("SESSIONCACHE_URL", "embedded:///srv/sessions")
    storage = resolve_storage(None, None)
    assert storage.kind == "EMBEDDED" and storage.server is not None
    assert str(storage.server.data_dir) == "/srv/sessions"


def test_config_manager_merges_and_explains_sources(tmp_path: Path) -> None:
    toml = tmp_path / "sessioncache.toml"
    toml.write_text(
        "[sessioncache]\n"
        'namespace = "from_file"\n'
        "default_ttl = 600.0\n"
        'backup_key = "file-secret-key"\n'
        "[sessioncache.tracker]\n"
        "event_max_len = 500\n"
    )
    environ = {
        "SESSIONCACHE_URL": "redis://:pw-in-url@127.0.0.1:1/0",
        "SESSIONCACHE_CONFIG": str(toml),
        "SESSIONCACHE_DEFAULT_TTL": "900",
        "SESSIONCACHE_BACKUP_EVENTS": "true",
    }
    manager = ConfigManager(environ=environ)
    config = manager.load(preset="production", health_interval=5.0)
    assert config.namespace == "from_file"
    assert config.default_ttl == 900.0 and config.backup_events is True
    assert config.tracker == TrackerConfig(event_max_len=500)
    assert (config.storage_type, config.storage_config) == (
        "REDIS",
        {"url": "redis://:pw-in-url@127.0.0.1:1/0"},
    )
    sources = {name: source for name, _, source in manager.explain()}
    assert sources["namespace"] == f"file {toml}"
    assert sources["default_ttl"] == "environment"
    assert sources["storage_config"] == "env SESSIONCACHE_URL"
    assert sources["backup_interval"] == "preset production"
    assert sources["health_interval"] == "argument"
    assert sources["snapshot_dir"] == "default"
    text = manager.explain_text() + repr(config)
    assert "file-secret-key" not in text and "pw-in-url" not in text and "***" in text


def test_env_values_are_checked() -> None:
    with pytest.raises(ValidationError, match="SESSIONCACHE_DEFAULT_TTL must be a number"):
        ConfigManager(environ={"SESSIONCACHE_DEFAULT_TTL": "soon"}).load()
    with pytest.raises(ValidationError, match="true or false"):
        ConfigManager(environ={"SESSIONCACHE_BACKUP_EVENTS": "maybe"}).load()


def test_secrets_stay_out_of_reprs() -> None:
    config = SessionSystemConfig(
        backup_key="k3y-s3cret",
        storage_type="REDIS",
        storage_config={"url": "rediss://user:p4ss@h:1", "password": "other"},
    )
    shown = repr(config)
    assert "k3y-s3cret" not in shown and "p4ss" not in shown and "other" not in shown
    assert "user:***@h:1" in shown


async def test_memory_storage_logs_once_that_it_is_not_shared(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sessioncache.system._memory_warned", False)
    with caplog.at_level(logging.WARNING, logger="sessioncache.system"):
        await initialize_sessions()
        await initialize_sessions(namespace="other", replace=True)
    warnings = [r for r in caplog.records if "not share" in r.getMessage()]
    assert len(warnings) == 1
