"""A small reader for RFC 2849 LDIF content files (entries only, no change records).

It exists so the static directory can load the same file a real OpenLDAP is seeded with.
Errors name the file and line and say how to fix the file, because the people editing it
are administrators, not Python developers.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from pathlib import Path

# AttributeDescription (RFC 4512): a name or numeric OID, then ";option"s.
_ATTRIBUTE = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)(?:;[A-Za-z0-9-]+)*")


class LdifError(ValueError):
    """A problem in an LDIF file, located by path and line (1-based)."""

    def __init__(self, path: str | os.PathLike[str], line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(f"{self.path}:{line}: {message}")


@dataclass(frozen=True, slots=True)
class LdifEntry:
    """One entry: its DN and its attributes, keyed by lower-cased attribute description."""

    dn: str
    attributes: dict[str, list[str]]
    line: int = 0


def _logical_lines(path: str, data: bytes) -> list[tuple[int, str]]:
    """Unfolded lines with the number of their first physical line; "" separates records.

    Comment lines (and their folded continuations) are dropped here.
    """
    result: list[tuple[int, str]] = []
    in_comment = False
    if data.startswith(b"\xef\xbb\xbf"):  # editors on Windows add a UTF-8 BOM
        data = data[3:]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise LdifError(
                path, number, 'not valid UTF-8; save the file as UTF-8 or use "attr:: base64"'
            ) from None
        if text.startswith(" "):
            if in_comment:
                continue
            if not result or result[-1][1] == "":
                raise LdifError(
                    path,
                    number,
                    "continuation line (leading space) with nothing to continue; "
                    "remove the leading space or join it to the line above",
                )
            first, previous = result[-1]
            result[-1] = (first, previous + text[1:])
            continue
        in_comment = text.startswith("#")
        if not in_comment:
            result.append((number, text))
    return result


def _parse_line(path: str, number: int, text: str) -> tuple[str, str]:
    """Split `attr: value`, `attr:: base64` into (lower-cased attribute, value)."""
    name, colon, rest = text.partition(":")
    if not colon or not _ATTRIBUTE.fullmatch(name):
        raise LdifError(
            path,
            number,
            'expected "attribute: value"; fold long lines with a leading space',
        )
    if rest.startswith(":"):
        encoded = rest[1:].strip(" ")
        try:
            value = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise LdifError(
                path,
                number,
                f'the "{name}::" value is not valid base64 of UTF-8 text; '
                "re-encode it (e.g. with `base64 -w0`) or write it as plain text after one colon",
            ) from None
    elif rest.startswith("<"):
        raise LdifError(
            path,
            number,
            f'"{name}:<" URL values are not supported; put the value in the file itself',
        )
    else:
        value = rest.lstrip(" ")  # FILL; trailing spaces are part of the value, as in slapd
    return name.lower(), value


def _parse_record(path: str, lines: list[tuple[int, str]]) -> LdifEntry:
    dn_line, first = lines[0]
    name, dn = _parse_line(path, dn_line, first)
    if name != "dn":
        raise LdifError(
            path,
            dn_line,
            'expected "dn: ..." to start an entry; separate entries with one blank line',
        )
    attributes: dict[str, list[str]] = {}
    for number, text in lines[1:]:
        if text == "-":
            raise LdifError(path, number, _CHANGE_RECORD)
        attr, value = _parse_line(path, number, text)
        if attr in ("changetype", "control"):
            raise LdifError(path, number, _CHANGE_RECORD)
        if attr == "dn":
            raise LdifError(path, number, "a second dn in one entry; put a blank line before each new entry")
        attributes.setdefault(attr, []).append(value)
    if not attributes:
        raise LdifError(path, dn_line, f"entry {dn!r} has no attributes; add its objectClass etc.")
    return LdifEntry(dn=dn, attributes=attributes, line=dn_line)


_CHANGE_RECORD = (
    "change records (changetype/control/-) are not supported; "
    "write the entry as it should be, without changetype"
)


def read_ldif(path: str | os.PathLike[str]) -> list[LdifEntry]:
    """The entries of an LDIF content file, in file order.

    Raises LdifError for syntax errors and OSError when the file cannot be read.
    """
    name = str(path)
    lines = _logical_lines(name, Path(path).read_bytes())
    records: list[list[tuple[int, str]]] = [[]]
    for number, text in lines:
        if text == "":
            if records[-1]:
                records.append([])
        else:
            records[-1].append((number, text))
    records = [r for r in records if r]
    # Optional "version: 1" before the first entry, with or without a blank line after it.
    if records and records[0][0][1].lower().startswith("version:"):
        number, text = records[0][0]
        _, version = _parse_line(name, number, text)
        if version.strip() != "1":
            raise LdifError(name, number, f'unsupported LDIF version {version!r}; use "version: 1"')
        records[0] = records[0][1:]
        records = [r for r in records if r]
    return [_parse_record(name, record) for record in records]
