"""Persistence: backups (full, incremental), restore strategies, export/import, snapshots."""

from .catalogue import BackupInfo
from .formats import FORMATS
from .manager import Persistence
from .migrations import SCHEMA_VERSION, Migrations
from .restore import STRATEGIES, RestoreReport
from .verify import VerifyReport

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
