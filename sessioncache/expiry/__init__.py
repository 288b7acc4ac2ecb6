"""Session expiry: policies, ordered rules, actions, archive, and the sweep (docs/expiry.md)."""

from .archive import ArchivedSession
from .engine import ExpiryEngine
from .report import ExpiryInfo, ExpiryNotice, ExpiryReport
from .rules import Rule, load_rules_toml, parse_rules

__all__ = [
    "ArchivedSession",
    "ExpiryEngine",
    "ExpiryInfo",
    "ExpiryNotice",
    "ExpiryReport",
    "Rule",
    "load_rules_toml",
    "parse_rules",
]
