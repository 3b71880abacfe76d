"""Numbered schema migrations of the host's ciphertext store, one module per SQL dialect.

A migration is a version number, a name and a tuple of SQL statements (not a
script: SQLite's ``executescript`` would commit the surrounding transaction, and
every migration must apply inside one transaction with its ``schema_migrations``
row). The store records each applied version with a checksum of its statements,
refuses to start against a database that has a version this code does not know
(a newer deployment migrated it) or whose recorded checksum differs (a migration
was edited after release), and applies the missing ones in order.

Migrations live in Python rather than ``.sql`` files so they ship inside the
wheel without package-data rules. Never edit a released migration: add the next
number.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Migration", "check_sequence"]


@dataclass(frozen=True)
class Migration:
    """One schema change.

    Attributes:
        version: 1, 2, 3, ... with no gaps.
        name: a short description, recorded next to the version.
        statements: the SQL statements, applied in order in one transaction.
    """

    version: int
    name: str
    statements: tuple[str, ...]

    @property
    def checksum(self) -> str:
        """Hex SHA-256 of the statements (whitespace-normalised), recorded when applied."""
        normalised = "\n;\n".join(" ".join(s.split()) for s in self.statements)
        return hashlib.sha256(normalised.encode()).hexdigest()


def check_sequence(migrations: Sequence[Migration]) -> None:
    """Check that versions run 1..n without gaps and every migration has statements.

    Arguments:
        migrations: one dialect's migrations, in order.

    Raises:
        ValueError: the list is malformed (a programming error, caught by the tests).
    """
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(f"migration {migration.version} out of sequence, expected {expected}")
        if not migration.statements:
            raise ValueError(f"migration {migration.version} has no statements")
