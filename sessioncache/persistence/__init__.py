"""Persistence: backups (full, incremental), restore strategies, export/import, snapshots."""

from .formats import FORMATS
from .manager import BackupInfo, Persistence, VerifyReport
from .migrations import SCHEMA_VERSION, Migrations
from .restore import STRATEGIES, RestoreReport

__all__ = [
    "FORMATS",
    "SCHEMA_VERSION",
    "STRATEGIES",
    "BackupInfo",
    "Migrations",
    "Persistence",
    "RestoreReport",
    "VerifyReport",
]
