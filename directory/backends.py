"""Opening the directory backend a policy's `directory:` section names."""

from __future__ import annotations

from pathlib import Path

from citygate.directory.breaker import GuardSettings
from citygate.directory.cache import cache_settings
from citygate.directory.gateway import DirectoryGateway
from citygate.directory.model import Directory
from citygate.directory.problems import ConfigError, Problem
from citygate.directory.settings import DirectorySettings
from citygate.directory.static import DirectoryConfigError, StaticDirectory

BACKENDS = ("static", "ldap")


def open_directory(settings: DirectorySettings, config_path: str = "config") -> Directory:
    """The backend ready for lookups; ConfigError naming the setting to fix otherwise.

    Nothing is asked of the directory here: an LDAP server that is down when the proxy starts
    only makes social-media requests fail closed until it answers.
    """
    # Validated here for every backend, so a mistake in it is reported when the config loads.
    cache_settings(settings.options.get("cache"), config_path)
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
    if settings.backend == "ldap":
        from citygate.directory.ldap import LdapDirectory
        from citygate.directory.ldap_config import ldap_settings

        return LdapDirectory(ldap_settings(settings.options, settings.base, config_path, settings.line_of))
    raise _error(
        config_path,
        f'unknown directory backend "{settings.backend}"',
        f"use one of: {', '.join(BACKENDS)}",
    )


def directory_gateway(
    directory: Directory, settings: DirectorySettings, config_path: str = "config"
) -> DirectoryGateway:
    """The proxy's gateway to `directory`, with the section's cache settings (ttl, grace, ...)
    and its guard (call_timeout, the breaker)."""
    return DirectoryGateway.cached(directory, settings, config_path, guard=guard_settings(directory))


def guard_settings(directory: Directory) -> GuardSettings | None:
    """How the gateway guards calls to `directory`; None for a directory read from memory."""
    from citygate.directory.ldap import LdapDirectory

    return directory.settings.guard if isinstance(directory, LdapDirectory) else None


def _error(config_path: str, message: str, fix: str) -> ConfigError:
    return ConfigError([Problem(Path(config_path), None, message, fix)])
