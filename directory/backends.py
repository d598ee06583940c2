"""Opening the directory backend a policy's `directory:` section names."""

from __future__ import annotations

from pathlib import Path

from citygate.directory.model import Directory
from citygate.directory.static import DirectoryConfigError, StaticDirectory
from citygate.proxy.policy import DirectorySettings
from citygate.proxy.problems import ConfigError, Problem

BACKENDS = ("static",)


def open_directory(settings: DirectorySettings, config_path: str = "config") -> Directory:
    """The backend ready for lookups; ConfigError naming the setting to fix otherwise."""
    if settings.backend == "static":
        ldif = settings.options.get("ldif")
        if not isinstance(ldif, str) or not ldif:
            raise _error(
                config_path,
                'the static directory needs "ldif:"',
                "e.g. directory: {backend: static, ldif: ../directory/demo.ldif}",
            )
        try:
            return StaticDirectory.from_ldif(settings.base / ldif)
        except DirectoryConfigError as exc:
            raise ConfigError([Problem(settings.base / ldif, None, str(exc))]) from exc
    raise _error(
        config_path,
        f'unknown directory backend "{settings.backend}"',
        f"use one of: {', '.join(BACKENDS)}",
    )


def _error(config_path: str, message: str, fix: str) -> ConfigError:
    return ConfigError([Problem(Path(config_path), None, message, fix)])
