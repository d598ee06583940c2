"""The proxy's asynchronous door to a directory backend.

mitmproxy runs every connection on one event loop: a directory call made there would stall
all traffic, ordinary traffic included. The gateway runs blocking backends in worker threads
and turns "the directory could not answer" into absent answers, which the decision core
treats as `directory_unavailable` for social-media requests only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from citygate.directory.model import Directory, DirectoryUnavailable, Person

log = logging.getLogger(__name__)

T = TypeVar("T")


class DirectoryGateway:
    def __init__(self, backend: Directory) -> None:
        self.backend = backend

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        if self.backend.blocking:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    async def people(self, uids: Iterable[str]) -> dict[str, Person | None]:
        """Each uid's Person (None: no such account); uids the directory could not answer are absent."""
        answers: dict[str, Person | None] = {}
        for uid in uids:
            try:
                answers[uid] = await self._call(self.backend.lookup, uid)
            except DirectoryUnavailable as exc:
                log.warning("directory unavailable looking up %s: %s", uid, exc)
        return answers

    async def authenticate(self, uid: str, password: str) -> bool | None:
        """Whether the password is right; None when the directory could not say."""
        try:
            return await self._call(self.backend.authenticate, uid, password)
        except DirectoryUnavailable as exc:
            log.warning("directory unavailable verifying a password for %s: %s", uid, exc)
            return None

    async def members(self, groups: Iterable[str]) -> list[Person]:
        """Everyone in any of the groups; groups the directory could not list are left out."""
        found: dict[str, Person] = {}
        for group in groups:
            try:
                for person in await self._call(self.backend.group_members, group):
                    found.setdefault(person.uid, person)
            except DirectoryUnavailable as exc:
                log.warning("directory unavailable listing group %s: %s", group, exc)
        return list(found.values())
