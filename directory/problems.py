"""Configuration problems that name the file, the line and the fix.

Loading never stops at the first mistake: every loader appends to a `Problems` list so that
`citygate check` can show a director everything wrong with a grant file in one run. It lives in
the lowest package, so that the directory's loaders and the policy's above it report alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    path: Path
    line: int | None
    message: str
    fix: str = ""
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        fix = f"; {self.fix}" if self.fix else ""
        label = "" if self.severity is Severity.ERROR else f"{self.severity}: "
        return f"{where}: {label}{self.message}{fix}"


class Problems(list[Problem]):
    def error(self, path: Path, line: int | None, message: str, fix: str = "") -> None:
        self.append(Problem(path, line, message, fix, Severity.ERROR))

    def warning(self, path: Path, line: int | None, message: str, fix: str = "") -> None:
        self.append(Problem(path, line, message, fix, Severity.WARNING))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self if p.severity is Severity.WARNING]


class ConfigError(Exception):
    """The configuration cannot be used; carries every problem found, warnings included."""

    def __init__(self, problems: list[Problem]) -> None:
        # In file and line order, as a director reads the file.
        self.problems = sorted(problems, key=lambda p: (str(p.path), p.line or 0))
        super().__init__("\n".join(str(p) for p in problems))
