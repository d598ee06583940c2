"""Enforce or report: whether a denial is acted on, globally and per department.

In report mode a request is decided, logged and counted exactly as in enforce mode, but a
denial is not acted on: the request goes through and its access-log record says `would_deny`.
A department can so be observed for a week before its denials take effect.

    mode: enforce            # the default for everyone
    departments:
      Parks: {mode: report}  # Parks is observed, not blocked

Pure: the policy loader calls `parse_enforcement`; the gate asks `mode_for(decision)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from citygate.directory.problems import Problems
from citygate.proxy.yamlfile import Node


class Mode(StrEnum):
    ENFORCE = "enforce"
    REPORT = "report"


class _Evidence(Protocol):
    @property
    def employee_department(self) -> str | None: ...


class _Decided(Protocol):
    @property
    def evidence(self) -> _Evidence: ...


@dataclass(frozen=True)
class Enforcement:
    default: Mode = Mode.ENFORCE
    departments: Mapping[str, Mode] = field(default_factory=lambda: MappingProxyType({}))  # casefolded keys

    def mode_for(self, decision: _Decided) -> Mode:
        """The mode of the employee's department if it has one, else the default.

        A request whose employee is unknown (not signed in) gets the default: a department's
        report mode cannot apply to someone whose department is not known.
        """
        department = decision.evidence.employee_department
        if department:
            return self.departments.get(department.casefold(), self.default)
        return self.default


_MODES = ", ".join(mode.value for mode in Mode)


def _mode(path: Path, value: object, line: int, where: str, problems: Problems) -> Mode | None:
    try:
        return Mode(str(value).strip().lower()) if isinstance(value, str) else Mode(value)  # type: ignore[arg-type]
    except ValueError:
        problems.error(path, line, f'{where} "{value}" is not a mode', f"use one of: {_MODES}")
        return None


def parse_enforcement(path: Path, document: Node, problems: Problems) -> Enforcement:
    """The top-level `mode:` and `departments:` settings; problems recorded with file and line."""
    default = Mode.ENFORCE
    if "mode" in document:
        default = _mode(path, document["mode"], document.line_of("mode"), "mode", problems) or Mode.ENFORCE
    section = document.get("departments")
    departments: dict[str, Mode] = {}
    if section is None:
        return Enforcement(default, MappingProxyType(departments))
    if not isinstance(section, Node):
        problems.error(
            path,
            document.line_of("departments"),
            '"departments:" must be a mapping of department names to settings',
            "e.g. departments: {Parks: {mode: report}}",
        )
        return Enforcement(default, MappingProxyType(departments))
    for name, settings in section.items():
        line = section.line_of(name)
        if not isinstance(settings, Node):
            problems.error(
                path,
                line,
                f'department "{name}" must be a mapping of settings',
                f"e.g. {name}: {{mode: report}}",
            )
            continue
        for key in sorted(set(settings) - {"mode"}):
            problems.error(
                path,
                settings.line_of(key),
                f'unknown setting "{key}" for department "{name}"',
                "known settings: mode",
            )
        if "mode" not in settings:
            problems.error(path, line, f'department "{name}" has no mode', f"e.g. {name}: {{mode: report}}")
            continue
        mode = _mode(
            path, settings["mode"], settings.line_of("mode"), f'mode of department "{name}"', problems
        )
        if mode is not None:
            departments[str(name).strip().casefold()] = mode
    return Enforcement(default, MappingProxyType(departments))
