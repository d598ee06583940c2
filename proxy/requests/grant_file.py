"""Writing an approved grant into its department's grant file, as a Director would by hand.

The file keeps its comments and layout (ruamel.yaml's round trip). Before the file is
replaced, the whole configuration is loaded with the new text in its place (`load_policy`'s
`pending`), so a grant that `citygate check` would refuse is never written. The replacement is
atomic (a new file renamed over the old), under a lock that every writer takes: two approvals
at the same moment are written one after the other, both kept.
"""

from __future__ import annotations

import fcntl
import io
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from citygate.directory.problems import ConfigError, Problem
from citygate.proxy.policy import Policy, load_policy

LOCK_NAME = ".citygate-grants.lock"  # not *.yaml: never read as a grant file


@dataclass(frozen=True, slots=True)
class ApprovedGrant:
    """A personal grant as an approved access request makes it."""

    id: str
    employee: str
    sites: tuple[str, ...]
    purpose: str
    approved_by: str
    approved_on: date
    expires: date
    request_id: str
    paths: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def entry(self) -> CommentedMap:
        """The grant file entry, in the order a Director writes one (config/grants/parks.yaml)."""
        entry = CommentedMap()
        entry["id"] = self.id
        entry["employee"] = self.employee
        entry["sites"] = _flow(self.sites)
        entry["purpose"] = self.purpose
        entry["approved_by"] = self.approved_by
        entry["approved_on"] = self.approved_on
        entry["expires"] = self.expires
        if self.paths:
            entry["paths"] = CommentedMap((site, _flow(scope)) for site, scope in self.paths.items())
        entry["request"] = self.request_id
        return entry


class GrantNotWritten(Exception):
    """The grant file would not load: nothing was written."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


def add_grant(
    config_path: Path, department: str, grant: ApprovedGrant, *, loaded: Policy | None = None
) -> Path:
    """Append `grant` to the grant file of `department` (created when it has none); its path.

    `loaded` is the configuration as the caller loaded it, if it has: its grant files that did
    not change are not read again. Raises GrantNotWritten, with every problem, when the
    configuration would not load with it.
    """
    loaded = loaded or load_policy(config_path)
    with _locked(_grants_dir(loaded)):
        path, text = _with_grant(config_path, loaded, department, grant)
        _replace(path, text)
    return path


def problems_writing(
    config_path: Path, department: str, grant: ApprovedGrant, *, loaded: Policy | None = None
) -> list[Problem]:
    """What would stop `add_grant` now (nothing is written): to check before an approval is saved."""
    try:
        _with_grant(config_path, loaded or load_policy(config_path), department, grant)
    except GrantNotWritten as exc:
        return exc.problems
    return []


def _grants_dir(loaded: Policy) -> Path:
    assert loaded.grants_dir is not None, "load_policy sets the grants folder"
    return loaded.grants_dir


def _with_grant(config_path: Path, loaded: Policy, department: str, grant: ApprovedGrant) -> tuple[Path, str]:
    """The department's grant file and its text with `grant` added, checked as citygate check would."""
    path, document = _department_file(_grants_dir(loaded), department)
    grants = document.get("grants")
    if not isinstance(grants, CommentedSeq):
        grants = document["grants"] = CommentedSeq()
    grants.append(grant.entry())
    text = _dump(document)
    try:
        # The files `loaded` read and that did not change are taken from it, not read again.
        load_policy(config_path, previous=loaded, pending={path: text})
    except ConfigError as exc:
        raise GrantNotWritten([p for p in exc.problems if p.path == path] or exc.problems) from exc
    return path, text


def _yaml() -> YAML:
    yaml = YAML()  # round trip: comments, key order and quoting as the file has them
    yaml.indent(mapping=2, sequence=4, offset=2)  # "grants:\n  - id: ...", as config/grants/
    yaml.width = 4096  # a long purpose stays on its line
    return yaml


def _dump(document: CommentedMap) -> str:
    out = io.StringIO()
    _yaml().dump(document, out)
    return out.getvalue()


def _department_file(grants_dir: Path, department: str) -> tuple[Path, CommentedMap]:
    """The file whose `department:` is `department` (any case), or a new one for it."""
    for path in sorted(grants_dir.glob("*.yaml")) + sorted(grants_dir.glob("*.yml")):
        document = _yaml().load(path.read_text(encoding="utf-8"))
        if isinstance(document, CommentedMap) and str(document.get("department", "")).casefold() == (
            department.casefold()
        ):
            return path, document
    document = CommentedMap()
    document["department"] = department
    document["grants"] = CommentedSeq()
    document.yaml_set_start_comment(
        f"{department}: grants approved through citygate's access requests (and by hand).\n"
        "One entry per grant; each names the sites, the business purpose and an expiry."
    )
    return _free_path(grants_dir, department), document


def _free_path(grants_dir: Path, department: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", department.casefold()).strip("-") or "department"
    path, n = grants_dir / f"{slug}.yaml", 2
    while path.exists():
        path, n = grants_dir / f"{slug}-{n}.yaml", n + 1
    return path


@contextmanager
def _locked(grants_dir: Path) -> Iterator[None]:
    with open(grants_dir / LOCK_NAME, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _replace(path: Path, text: str) -> None:
    """Write `text` to a new file beside `path` and rename it over `path`: readers (the proxy's
    reload) see the old file or the new one, never half of one."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _flow(items: tuple[str, ...]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()  # [facebook, instagram], as Directors write lists of sites
    return seq
