"""Who may read the CA's key and its passphrase: only the user citygate runs as.

Whoever reads the CA key can make certificates that every city device trusts, for any site; so
a file open to every user is an error, and one open to a group a warning (systemd's usual
root:citygate 0640 for a secret is fine when the group holds nobody but citygate's user).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from citygate.proxy.pki.findings import Findings

_FIX = "chmod 0600, owned by the user citygate runs as (citygate ca install --owner does both)"


def private_file_findings(path: Path, what: str) -> Findings:
    """Whether `path` exists, is a file this user can read, and is closed to other users."""
    found = Findings()
    where = f"{what} {path}"
    try:
        info = path.stat()
    except FileNotFoundError:
        found.errors.append(f"{where} does not exist")
        return found
    if not stat.S_ISREG(info.st_mode):
        found.errors.append(f"{where} is not a file")
        return found
    if not os.access(path, os.R_OK):
        found.errors.append(
            f"{where} cannot be read by this user ({owner_name(os.getuid())}): citygate must run as its "
            f"owner ({owner_name(info.st_uid)}); check as that user, or {_FIX}"
        )
        return found
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o006:
        found.errors.append(
            f"{where} is open to every user of this machine (mode {mode:04o}): whoever reads it can make "
            f"certificates that the city's devices trust; {_FIX}"
        )
    elif mode & 0o060:
        found.warnings.append(
            f"{where} is open to the group {group_name(info.st_gid)} (mode {mode:04o}); keep it so only if that "
            f"group holds nobody but citygate's user, else {_FIX}"
        )
    found.notes.append(f"{where}: owned by {owner_name(info.st_uid)}, mode {mode:04o}")
    return found


def folder_findings(folder: Path) -> Findings:
    """A folder others may write to lets them replace the CA (a rename needs no access to the file)."""
    found = Findings()
    try:
        mode = stat.S_IMODE(folder.stat().st_mode)
    except OSError:
        return found  # reported with the file in it
    if mode & 0o002 and not mode & stat.S_ISVTX:
        found.errors.append(
            f"the folder {folder} is writable by every user (mode {mode:04o}), who can replace the proxy's CA; "
            "chmod 0700, owned by the user citygate runs as"
        )
    elif mode & 0o020:
        found.warnings.append(
            f"the folder {folder} is writable by its group (mode {mode:04o}), who can replace the proxy's CA; "
            "chmod 0700 unless that group holds nobody but citygate's user"
        )
    return found


def owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"gid {gid}"
