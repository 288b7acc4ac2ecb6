"""Configuration: presets, environment variables, TOML files, and the ConfigManager merging them."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ValidationError
from .storage import URL_ENV, redact, storage_from_url
from .system import SessionSystem, SessionSystemConfig, initialize_sessions

CONFIG_ENV = "SESSIONCACHE_CONFIG"
ENV_PREFIX = "SESSIONCACHE_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def get_development_config(**overrides: Any) -> SessionSystemConfig:
    """Every feature on, for one developer's machine: storage from $SESSIONCACHE_URL, else
    MEMORY; backups and archive under the data directory; event streams in backups."""
    options: dict[str, Any] = {"enable_all_features": True, "backup_events": True}
    return _preset(options, overrides)


def get_production_config(
    storage_config: Mapping[str, Any] | None = None,
    backup_dir: str | os.PathLike[str] | None = None,
    archive_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> SessionSystemConfig:
    """Every feature on, hourly backups (a full one every 24) kept for a week, event streams
    in backups. ``storage_config`` with ``db_path``/``data_dir`` is EMBEDDED, with ``url``
    the URL's type; none: $SESSIONCACHE_URL."""
    options: dict[str, Any] = {
        "storage_config": dict(storage_config) if storage_config is not None else None,
        "enable_all_features": True,
        "backup_dir": backup_dir,
        "archive_dir": archive_dir,
        "backup_events": True,
        "backup_interval": 3600.0,
        "backup_full_every": 24,
        "backup_max_age": 7 * 86400.0,
    }
    return _preset(options, overrides)


def _preset(options: dict[str, Any], overrides: Mapping[str, Any]) -> SessionSystemConfig:
    return SessionSystemConfig.from_options(**{**options, **overrides})


async def create_default_session_system(
    storage_type: str | None = None, enable_all_features: bool = True, **overrides: Any
) -> SessionSystem:
    """A started system on the development preset (see get_development_config)."""
    config = get_development_config(
        storage_type=storage_type, enable_all_features=enable_all_features, **overrides
    )
    return await initialize_sessions(**config.__dict__)


def _coerce(name: str, text: str) -> Any:
    """An environment variable's text as the type of the option it sets."""
    field = SessionSystemConfig.__dataclass_fields__[name]
    kind = str(field.type)
    if kind.startswith("bool"):
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValidationError(f"{ENV_PREFIX}{name.upper()} must be true or false, got {text!r}")
    if text == "" and "None" in kind:
        return None
    for python_type, label in ((int, "int"), (float, "float")):
        if kind.startswith(label):
            try:
                return python_type(text)
            except ValueError:
                raise ValidationError(
                    f"{ENV_PREFIX}{name.upper()} must be a number, got {text!r}"
                ) from None
    return text


class ConfigManager:
    """Loads options from defaults, a preset, a TOML file, the environment and arguments, in
    that order (each overrides the one before), validates them, and explains each value's source.

    Environment: ``SESSIONCACHE_URL`` (the storage), ``SESSIONCACHE_CONFIG`` (a TOML file),
    and ``SESSIONCACHE_<OPTION>`` for any scalar option (``SESSIONCACHE_NAMESPACE=bots``). The
    TOML file holds the options at top level or under a ``[sessioncache]`` table.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}

    def _set(self, options: Mapping[str, Any], source: str) -> None:
        known = SessionSystemConfig.option_names()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValidationError(
                f"unknown option(s) {', '.join(unknown)} in {source}; known: {', '.join(known)}"
            )
        for name, value in options.items():
            self.values[name] = value
            self.sources[name] = source

    def load(
        self,
        file: str | os.PathLike[str] | None = None,
        *,
        preset: str | None = None,
        env: bool = True,
        **overrides: Any,
    ) -> SessionSystemConfig:
        """The merged, validated config (``preset``: "development" or "production")."""
        self.values, self.sources = {}, {}
        if preset is not None:
            presets = {"development": get_development_config, "production": get_production_config}
            if preset not in presets:
                raise ValidationError(f"preset must be one of {', '.join(presets)}, got {preset!r}")
            chosen = presets[preset]()
            defaults = SessionSystemConfig()
            self._set(
                {
                    f.name: getattr(chosen, f.name)
                    for f in dataclasses.fields(chosen)
                    if getattr(chosen, f.name) != getattr(defaults, f.name)
                },
                f"preset {preset}",
            )
        path = file if file is not None else (self.environ.get(CONFIG_ENV) if env else None)
        if path:
            self._set(self.read_toml(path), f"file {path}")
        if env:
            self._set(self.from_environment(), "environment")
            if URL_ENV in self.environ and "storage_type" not in overrides:
                self.sources["storage_type"] = self.sources["storage_config"] = f"env {URL_ENV}"
        self._set(overrides, "argument")
        return self.build()

    def build(self) -> SessionSystemConfig:
        """The config from the values loaded so far (nested tables become their dataclasses)."""
        defaults = SessionSystemConfig()
        values = dict(self.values)
        for name, value in values.items():
            default = getattr(defaults, name)
            if isinstance(value, Mapping) and dataclasses.is_dataclass(default):
                values[name] = dataclasses.replace(default, **value)  # type: ignore[type-var]
        return SessionSystemConfig.from_options(**values)

    @staticmethod
    def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
        """Options from a TOML file (top level or a [sessioncache] table)."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValidationError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValidationError(f"config file {path} is not valid TOML: {exc}") from None
        table = data.get("sessioncache", data)
        if not isinstance(table, dict):
            raise ValidationError(f"[sessioncache] in {path} must be a table")
        return table

    def from_environment(self) -> dict[str, Any]:
        """The options the environment sets."""
        options: dict[str, Any] = {}
        url = self.environ.get(URL_ENV)
        if url:
            options["storage_type"], options["storage_config"] = storage_from_url(url)
        for name in SessionSystemConfig.option_names():
            variable = f"{ENV_PREFIX}{name.upper()}"
            if variable in self.environ and name not in ("storage_config",):
                options[name] = _coerce(name, self.environ[variable])
        return options

    def explain(self) -> list[tuple[str, Any, str]]:
        """(option, value safe to print, source) for every option of the last load()."""
        config = self.build()
        return [
            (name, redact(getattr(config, name), name), self.sources.get(name, "default"))
            for name in SessionSystemConfig.option_names()
        ]

    def explain_text(self) -> str:
        """explain() as an aligned table."""
        rows = [(n, repr(v), s) for n, v, s in self.explain()]
        width = max(len(n) for n, _, _ in rows)
        return "\n".join(f"{n:<{width}}  {v}  ({s})" for n, v, s in rows)
