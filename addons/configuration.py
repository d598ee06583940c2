"""What the gate serves from: the policy, its directory gateway and identity resolver, swapped as one.

Reading a configuration reads files and may open a directory backend, so a reload reads it off
the event loop (`preload`); switching to it is one assignment on the event loop (`switch`), so a
hook sees the old configuration or the new one, never a mix of the two.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from citygate.addons.identity import IdentityResolver
from citygate.directory.backends import guard_settings, open_directory
from citygate.directory.cache import cache_settings
from citygate.directory.gateway import DirectoryGateway
from citygate.directory.problems import ConfigError
from citygate.directory.shared import shared_between_workers
from citygate.proxy.policy import Policy, load_policy

log = logging.getLogger("citygate")


@dataclass(frozen=True, slots=True)
class Loaded:
    """One loaded configuration: everything a decision reads besides the request."""

    policy: Policy
    directory: DirectoryGateway
    identities: IdentityResolver


class Configuration:
    """Loads, reloads and owns the configuration named by the `citygate_config` option."""

    def __init__(self) -> None:
        self.current: Loaded | None = None
        # Loads by result ("success", "failure"), start-up included: citygate_config_reloads_total.
        self.loads: Counter[str] = Counter()
        # Read by `preload` off the event loop, for the next `switch` to use.
        self._preloaded: tuple[Policy, DirectoryGateway] | None = None

    @property
    def policy(self) -> Policy | None:
        return self.current.policy if self.current is not None else None

    def switch(self, path: str) -> None:
        """Serve the configuration in `path` (as `preload` read it, if it did); ConfigError keeps the current one."""
        read, self._preloaded = self._preloaded, None
        if read is None:
            try:
                read = self._read(path)
            except ConfigError:
                self.loads["failure"] += 1
                raise
        self._install(*read, path)

    async def preload(self, path: str) -> bool:
        """Read `path` off the event loop for the next `switch`; False (logged, counted) if it is invalid."""
        try:
            self._preloaded = await asyncio.to_thread(self._read, path)
        except ConfigError as exc:
            self.loads["failure"] += 1
            log.error(
                "citygate: the changed configuration is invalid; still serving the previous one:\n%s", exc
            )
            return False
        return True

    def watched_files(self) -> list[Path]:
        """Every file (and the grants folder) whose change should reload the policy."""
        return [] if self.policy is None else self.policy.watched_files()

    def close(self) -> None:
        if self.current is not None:
            self.current.directory.close()

    def _read(self, path: str) -> tuple[Policy, DirectoryGateway]:
        """The policy in `path` and a directory gateway for it; ConfigError when it cannot be used.

        A gateway whose settings did not change is kept, so a reload keeps the directory cache
        warm and costs the directory nothing. A static directory's file may have changed, so it
        is read again.
        """
        current = self.current
        # Grant files that did not change since the last load are not read again.
        policy = load_policy(Path(path), previous=current.policy if current else None)
        if (
            current is not None
            and policy.directory == current.policy.directory
            and policy.directory.backend != "static"
        ):
            return policy, current.directory
        # Workers of one host share their directory answers (directory/shared.py).
        cache = cache_settings(policy.directory.options.get("cache"), path)
        directory = open_directory(policy.directory, path)
        backend = shared_between_workers(directory, policy.directory, cache)
        return policy, DirectoryGateway(backend, cache, guard=guard_settings(directory))

    def _install(self, policy: Policy, directory: DirectoryGateway, path: str) -> None:
        self.loads["success"] += 1
        for warning in policy.warnings:
            log.warning(warning)
        identities = IdentityResolver(directory, policy.features.identity)
        identities.prefetch_keys()
        previous, self.current = self.current, Loaded(policy, directory, identities)
        directory.start()  # its health checks: /readyz follows the directory from now on
        if previous is not None and previous.directory is not directory:
            previous.directory.close()  # its worker threads, checker and pooled LDAP connections
        log.info(
            "citygate: loaded %s (%d sites, %d grants)", path, len(policy.catalog.sites), len(policy.grants)
        )
