"""The `directory:` section as the policy loader read it: which backend, its options, and the folder
relative paths in them are resolved against. Each backend checks its own options when opened."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DirectorySettings:
    backend: str
    options: Mapping[str, object]
    base: Path  # folder relative paths in options are resolved against
    # The line of each option in the configuration file, for errors; not part of the settings
    # (moving a line does not make a reload open a new directory connection).
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)

    def line_of(self, key: str) -> int | None:
        return self.lines.get(key)
