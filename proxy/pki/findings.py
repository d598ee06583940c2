"""What a check of the proxy's CA reports: errors (it cannot be used), warnings, and notes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Findings:
    """Errors make a check fail; warnings do not (an expiry weeks away, a group-readable file);
    notes say what was found (the key, the file's owner, what could not be checked and why), and
    the summary, in one line, what was checked (the CA, its chain, until when it is valid)."""

    summary: str = ""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def extend(self, other: Findings) -> None:
        self.errors += other.errors
        self.warnings += other.warnings
        self.notes += other.notes
