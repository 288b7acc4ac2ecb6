"""docs/configuration.md names every SessionSystemConfig field (initialize_sessions' options)."""

from __future__ import annotations

from pathlib import Path

from sessioncache.system import SessionSystemConfig

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_configuration_doc_lists_every_option() -> None:
    text = DOC.read_text()
    missing = [name for name in SessionSystemConfig.option_names() if f"`{name}`" not in text]
    assert missing == []
