"""Schema migrations: bring records of an older backup up to today's session hash schema."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import IntegrityError, ValidationError
from .formats import Record

SCHEMA_VERSION = 1
"""Version of the session hash layout a backup's records follow (fields v s c u a e m p t o)."""

Migration = Callable[[Record], Record]


class Migrations:
    """Steps from schema N to N+1, applied in order to every record of an older backup."""

    def __init__(self, current: int = SCHEMA_VERSION) -> None:
        self.current = current
        self._steps: dict[int, Migration] = {}

    def register(self, from_version: int, step: Migration) -> None:
        """Register the step that turns a schema-``from_version`` record into the next one."""
        if isinstance(from_version, bool) or not isinstance(from_version, int):
            raise ValidationError(f"from_version must be an int, got {from_version!r}")
        if not 0 <= from_version < self.current:
            raise ValidationError(
                f"a migration must start below the current schema {self.current}; "
                f"got {from_version}"
            )
        self._steps[from_version] = step

    def check(self, schema: int) -> None:
        """Raise unless records of this schema can be brought to the current one."""
        if schema > self.current:
            raise IntegrityError(
                f"backup schema {schema} is newer than this sessioncache's ({self.current}); "
                "upgrade sessioncache to restore it"
            )
        missing = [v for v in range(schema, self.current) if v not in self._steps]
        if missing:
            raise ValidationError(
                f"no migration registered from schema {missing[0]} to {missing[0] + 1}; "
                "register one with persistence.migrations.register()"
            )

    def upgrade(self, record: Record, schema: int) -> Record:
        for version in range(schema, self.current):
            record = self._steps[version](record)
        return record
