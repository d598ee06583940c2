"""YAML reading that remembers where every value came from.

PyYAML forgets line numbers once it builds dicts and silently keeps the last of two equal
keys. Directors edit grant files by hand, so every error must point at a line, and a
duplicated key (two `expires:` in one grant) must be an error rather than a silent choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from citygate.directory.problems import Problems


class Node(dict[str, Any]):
    """A YAML mapping that knows its own line and the line of each key (1-based)."""

    line: int
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class Items(list[Any]):
    """A YAML sequence that knows the line of each item (1-based)."""

    line: int
    item_lines: list[int]


if TYPE_CHECKING:
    # What the mixin below extends, for a type checker: at run time it is mixed into PyYAML's
    # SafeLoader or libyaml's CSafeLoader, which share SafeConstructor's methods.
    _Loader = yaml.SafeLoader
else:
    _Loader = object


class _Lines(_Loader):
    """The constructors that keep line numbers and catch duplicated keys, for either parser."""

    def __init__(self, stream: str, path: Path, problems: Problems) -> None:
        super().__init__(stream)
        self._path = path
        self._problems = problems

    # Narrower than typeshed's dict[Hashable, ...] (a dict type is invariant in its keys): YAML keys
    # are made text here.
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Node:  # type: ignore[override]
        mapping = Node()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            key_line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                key = str(key)
            if key in mapping:
                self._problems.error(
                    self._path,
                    key_line,
                    f'"{key}" appears twice in one entry (first on line {mapping.key_lines[key]})',
                    "keep one of them",
                )
                continue
            mapping[key] = self.construct_object(value_node, deep=True)
            mapping.key_lines[key] = key_line
        return mapping

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> Items:
        items = Items(self.construct_object(child, deep=True) for child in node.value)
        items.line = node.start_mark.line + 1
        items.item_lines = [child.start_mark.line + 1 for child in node.value]
        return items

    # Wider than typeshed's date, by design: an impossible date is returned as its text.
    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> object:  # type: ignore[override]
        # "2026-02-30" looks like a date to YAML but is none; keep the text, so the caller can
        # report it at its line instead of PyYAML raising ValueError.
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


class _LineLoader(_Lines, yaml.SafeLoader):
    """PyYAML's own parser: the reference, and the one whose error messages are reported."""


# libyaml's parser (when PyYAML was built with it) reads a file about ten times faster: 100,000
# grants load in seconds instead of a minute. It builds the same nodes with the same marks, and
# the constructors are the same Python code; files it rejects are read again by PyYAML's parser,
# so every error is still reported in PyYAML's words (bench/decision_core.py measures both).
_FastLineLoader: type[_Lines] | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _CLineLoader(_Lines, yaml.CSafeLoader):
        pass

    _FastLineLoader = _CLineLoader

for _loader in (_LineLoader, _FastLineLoader):
    if _loader is not None:
        _loader.add_constructor("tag:yaml.org,2002:timestamp", _loader.construct_yaml_timestamp)
        _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _loader.construct_mapping)
        _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _loader.construct_sequence)

_UNPARSED = object()


def _read_fast(text: str, path: Path, problems: Problems) -> Any:
    """The document as libyaml reads it, or _UNPARSED when it cannot (PyYAML then says why)."""
    if _FastLineLoader is None:
        return _UNPARSED
    found = Problems()  # kept only if the whole file reads, so nothing is reported twice
    loader = _FastLineLoader(text, path, found)
    try:
        document = loader.get_single_data()
    except yaml.YAMLError:
        return _UNPARSED
    finally:
        loader.dispose()
    problems.extend(found)
    return document


def read_yaml(path: Path, problems: Problems, empty_fix: str, *, text: str | None = None) -> Any:
    """The document in `path`, or None after recording why it could not be read.

    An empty file is an error too (`empty_fix` says what it should hold): an empty catalog or
    config must never load as "nothing to enforce". With `text`, that is read as the file's
    content (a file about to be written, checked first).
    """
    try:
        if text is None:
            text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.error(path, None, "file not found", "check the path, relative to the config file")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.error(path, None, f"cannot read file: {exc}", "save it as readable UTF-8 text")
        return None
    try:
        loader = _LineLoader(text, path, problems)
    except yaml.reader.ReaderError as exc:  # control characters are rejected up front
        line = text.count("\n", 0, exc.position) + 1
        problems.error(
            path,
            line,
            f"character {exc.character!r} is not allowed in YAML",
            "remove control characters (often pasted from a word processor)",
        )
        return None
    document = _read_fast(text, path, problems)
    if document is not _UNPARSED:
        loader.dispose()
        if document is None:
            problems.error(path, 1, "the file is empty", empty_fix)
        return document
    try:
        document = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        problems.error(path, *_mistake(exc))
        return None
    except yaml.YAMLError as exc:
        problems.error(path, _line_of(exc), f"not valid YAML: {exc}", "fix the YAML syntax")
        return None
    finally:
        loader.dispose()
    if document is None:
        problems.error(path, 1, "the file is empty", empty_fix)
    return document


# PyYAML's context for a bracket or quote it is still inside when the file goes wrong: the
# mistake is where that was opened (an unclosed `[` on line 17 is not line 18's fault).
_OPENED = {
    "while parsing a flow sequence": ("[", "]"),
    "while parsing a flow mapping": ("{", "}"),
    "while scanning a quoted scalar": ("quote", "the same quote"),
}


def _mistake(exc: yaml.MarkedYAMLError) -> tuple[int | None, str, str]:
    """Where the mistake is, in PyYAML's words, and the fix that fits it."""
    problem = exc.problem or exc.context or "the file is not YAML"
    opened = _OPENED.get(exc.context or "")
    if opened is not None and exc.context_mark is not None:
        what, closer = opened
        found = f" (line {exc.problem_mark.line + 1}: {problem})" if exc.problem_mark is not None else ""
        return (
            exc.context_mark.line + 1,
            f"not valid YAML: the {what} opened on this line is not closed{found}",
            f"close it with {closer} on this line, or quote the value if the {what} is meant as text",
        )
    line = _line_of(exc)
    if "mapping values are not allowed" in problem:
        fix = "quote a value that contains ': ' (e.g. purpose: \"Events: summer\"), or check this line's indentation"
    elif "\\t" in problem or "\t" in problem:
        fix = "indent with spaces: YAML does not allow tabs"
    elif "expected <block end>" in problem or "did not find expected" in problem:
        fix = "align this line with the lines above it at the same level (the same number of spaces)"
    else:
        fix = "check indentation and quote values that contain ': ' or start with a special character"
    return line, f"not valid YAML: {problem}", fix


def _line_of(exc: yaml.YAMLError) -> int | None:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return mark.line + 1 if mark is not None else None
