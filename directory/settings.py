"""The `directory:` section as the policy loader read it: which backend, its options, and the folder
relative paths in them are resolved against. Each backend checks its own options when opened."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DirectorySettings:
    backend: str
    options: Mapping[str, object]
    base: Path  # folder relative paths in options are resolved against
