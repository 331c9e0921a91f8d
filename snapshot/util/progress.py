"""Progress and warnings from library operations, through an injected reporter.

The library never prints: operations call a :class:`Reporter`; the CLI passes one that renders
a progress bar and warnings on stderr. The default does nothing.
"""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def phase(self, name: str, total: int) -> None:
        """A new phase starts; ``total`` is in bytes (0 when unknown), or in records for the
        phases of a collection copy (named ``copy NAME`` and ``check NAME``)."""

    def advance(self, amount: int) -> None:
        """``amount`` more bytes (or records) of the current phase are done (may be called from
        several threads at once: a restore writes small files in parallel)."""

    def warn(self, message: str) -> None:
        """Something the user should know that does not stop the operation."""

    def done(self) -> None:
        """The operation finished (successfully or not)."""


class NullReporter:
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def done(self) -> None:
        pass
